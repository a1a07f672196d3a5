// RMSNorm forward and backward (rows of D elements, fp32 accumulation; bf16 or fp32 storage).
// Where D is a whole number of 16-byte vectors (8 bf16, 4 fp32) the rows move as vectors held in
// 32-bit words, every load of a row issued before any is used:
// - forward: a warp per row (up to 16 vectors a lane);
// - backward (up to 512 vectors a row): a team of threads per row, a vector a thread, so each
//   thread keeps its columns' w and dw sums in registers for the whole kernel; a team walks a
//   fixed set of rows with the next row's loads in flight while it reduces the current one, the
//   teams of a block (one block an SM) add their dw in a fixed order into one fp64 partial row,
//   and a last kernel sums the partial rows (one an SM at most). The residual stream's gradient
//   is added into dx in the same pass.
// Other shapes take the scalar kernels, whose weight gradient is a second pass over fixed row
// chunks. No atomics anywhere: dw is the same on every run (of one GPU model: the block count
// follows the SM count).
// Floor: forward reads x (R*D) and writes y (R*D) (with the residual: reads two, writes two);
// backward reads dy and x (and the residual's gradient when given) and writes dx (the scalar
// path reads dy and x twice).
#include <algorithm>

#include "cuda/column_sum.cuh"
#include "cuda/kernels.h"
#include "cuda/rows.cuh"

namespace tessera::cuda {
namespace {

// A 16-byte vector held as four 32-bit words, converted with shifts: the Vec<bf16, 8> of vec.cuh
// takes a register per element, which costs the backward's blocks their occupancy and the
// forward's warps theirs.
__device__ __forceinline__ void Unpack(const uint4& u, float (&f)[4]) {
  f[0] = __uint_as_float(u.x), f[1] = __uint_as_float(u.y), f[2] = __uint_as_float(u.z), f[3] = __uint_as_float(u.w);
}
__device__ __forceinline__ void Unpack(const uint4& u, float (&f)[8]) {
  const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) f[2 * k] = __uint_as_float(w[k] << 16), f[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
}
__device__ __forceinline__ uint4 Pack(const float (&f)[4]) {
  return make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]), __float_as_uint(f[3]));
}
// Round to nearest even, as Store.
__device__ __forceinline__ uint4 Pack(const float (&f)[8]) {
  unsigned w[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    __nv_bfloat162 h = __float22bfloat162_rn(make_float2(f[2 * k], f[2 * k + 1]));
    w[k] = *reinterpret_cast<unsigned*>(&h);
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

template <class T>
__global__ void RmsnormKernel(const T* x, const T* w, T* y, float* rstd, int64_t rows, int64_t D, float eps) {
  int64_t r = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const T* xr = x + r * D;
  float ss = 0.f;
  for (int64_t j = lane; j < D; j += 32) {
    float v = Load(xr, j);
    ss += v * v;
  }
  ss = WarpSum(ss);
  float rs = 1.f / sqrtf(ss / float(D) + eps);
  if (lane == 0) rstd[r] = rs;
  T* yr = y + r * D;
  for (int64_t j = lane; j < D; j += 32) Store(yr, j, Load(xr, j) * rs * Load(w, j));
}

// dx = rstd * (g - x * rstd^2 * mean(g * x)), g = dy * w.
template <class T>
__global__ void RmsnormDxKernel(const T* dy, const T* x, const T* w, const float* rstd, T* dx, int64_t rows, int64_t D) {
  int64_t r = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const T* gr = dy + r * D;
  const T* xr = x + r * D;
  float dot = 0.f;
  for (int64_t j = lane; j < D; j += 32) dot += Load(gr, j) * Load(w, j) * Load(xr, j);
  dot = WarpSum(dot);
  float rs = rstd[r];
  float c3 = rs * rs * rs * dot / float(D);
  T* o = dx + r * D;
  for (int64_t j = lane; j < D; j += 32) Store(o, j, rs * (Load(gr, j) * Load(w, j)) - c3 * Load(xr, j));
}

// partial[chunk, j] = sum over the chunk's rows of dy * x * rstd (threads along j: coalesced).
template <class T>
__global__ void RmsnormDwPartialKernel(const T* dy, const T* x, const float* rstd, double* partial, int64_t rows, int64_t D,
                                       int64_t rowsPerChunk) {
  int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= D) return;
  int64_t r0 = blockIdx.y * rowsPerChunk;
  int64_t r1 = min(rows, r0 + rowsPerChunk);
  double s = 0;
  for (int64_t r = r0; r < r1; ++r) s += double(Load(dy, r * D + j) * Load(x, r * D + j)) * rstd[r];
  partial[blockIdx.y * D + j] = s;
}

// Lane l holds the row's vectors l, l + 32, ...; NV bounds how many (the row's vectors / 32,
// rounded up). Lanes past the row's end read its last vector and store nothing: no branch
// around the loads, so all of a row's loads (and w's) issue together.
template <class T, int NV, bool kResidual>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) RmsnormVecKernel(const T* x, const T* res, const T* w, T* sum, T* y,
                                                                        float* rstd, int64_t rows, int64_t D, float eps) {
  constexpr int N = kVec<T>;
  const int64_t r = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const int64_t vecs = D / N;
  const uint4* xr = reinterpret_cast<const uint4*>(x + r * D);
  const uint4* wr = reinterpret_cast<const uint4*>(w);
  uint4 v[NV], rv[NV], wv[NV];
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int64_t k = lane + 32 * i < vecs ? lane + 32 * i : vecs - 1;
    v[i] = xr[k];
    wv[i] = wr[k];
    if constexpr (kResidual) rv[i] = reinterpret_cast<const uint4*>(res + r * D)[k];
  }
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int64_t k = lane + 32 * i;
    float f[N];
    Unpack(v[i], f);
    if constexpr (kResidual) {
      float g[N];
      Unpack(rv[i], g);
      // The norm sees the sum as stored, so it matches add-then-rmsnorm.
#pragma unroll
      for (int e = 0; e < N; ++e) f[e] += g[e];
      v[i] = Pack(f);
      if (k < vecs) reinterpret_cast<uint4*>(sum + r * D)[k] = v[i];
      Unpack(v[i], f);
    }
    if (k < vecs) {
#pragma unroll
      for (int e = 0; e < N; ++e) ss += f[e] * f[e];
    }
  }
  ss = WarpSum(ss);
  const float rs = 1.f / sqrtf(ss / float(D) + eps);
  if (lane == 0) rstd[r] = rs;
  uint4* yr = reinterpret_cast<uint4*>(y + r * D);
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int64_t k = lane + 32 * i;
    float f[N], wf[N];
    Unpack(v[i], f);
    Unpack(wv[i], wf);
#pragma unroll
    for (int e = 0; e < N; ++e) f[e] = f[e] * rs * wf[e];
    if (k < vecs) yr[k] = Pack(f);
  }
}

// The backward's blocks: one an SM (their partial rows are what the last kernel sums), of up to
// 768 threads (80 registers a thread: a row in flight and the next, w and the dw sums).
constexpr int kBwdThreads = 768;
constexpr int kBwdMaxVecs = 512;
constexpr int kMaxTeams = 15;  // named barriers 1..15 (0 is __syncthreads')

/** Threads of a backward team for D: its vectors rounded up to whole warps (0: not that layout). */
template <class T>
int BwdTeamThreads(int64_t D) {
  if (D % kVec<T> != 0 || D / kVec<T> > kBwdMaxVecs) return 0;
  return static_cast<int>((D / kVec<T> + 31) / 32 * 32);
}

template <class T>
int BwdTeams(int64_t D) {
  const int team = BwdTeamThreads<T>(D);
  const int per = kBwdThreads / team;
  return team == 32 || per < kMaxTeams ? per : kMaxTeams;  // a one-warp team needs no barrier
}

/** Blocks of the team backward: one an SM, fewer where the rows do not need them. */
template <class T>
int64_t BwdTeamBlocks(int64_t rows, int64_t D) {
  const int64_t teams = BwdTeams<T>(D);
  const int64_t need = (rows + teams - 1) / teams;
  return std::min<int64_t>(need, SmCount());
}

__device__ __forceinline__ void TeamBarrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

/** A thread's vector of a row: dy, x, the residual's gradient, and the row's rstd. */
struct RowVec {
  uint4 g, x, res;
  float rs;
};

// dx as RmsnormDxKernel. Team u of the grid takes rows u, u + teams, ...: a fixed assignment, so
// each thread's dw sum, and the block's partial row, are the same every run.
template <class T, bool kResidual>
__global__ void __launch_bounds__(kBwdThreads, 1) RmsnormBackwardTeamKernel(const T* dy, const T* x, const T* w, const float* rstd,
                                                                           const T* dres, T* dx, double* partial, int64_t rows,
                                                                           int64_t D, int teams) {
  constexpr int N = kVec<T>;
  extern __shared__ double blockDw[];                  // D, where teams > 1
  __shared__ float warpDot[2][kBwdThreads / 32];       // double-buffered: one barrier a row
  const int teamThreads = blockDim.x / teams;
  const int team = threadIdx.x / teamThreads, t = threadIdx.x % teamThreads;
  const int teamWarps = teamThreads / 32, warp = threadIdx.x / 32, warp0 = team * teamWarps;
  const int64_t vecs = D / N;
  const bool on = t < vecs;
  // Threads past the row's end read a valid vector (the last) and store nothing: no branch
  // around the loads.
  const int64_t col = (on ? t : vecs - 1) * int64_t(N);
  float wf[N], acc[N] = {};
  LoadVec<N>(w + col, wf);
  if (!on) {
#pragma unroll
    for (int e = 0; e < N; ++e) wf[e] = 0.f;  // so the row's dot takes nothing from them
  }
  auto load = [&](int64_t r, RowVec& v) {
    v.rs = rstd[r];
    v.g = *reinterpret_cast<const uint4*>(dy + r * D + col);
    v.x = *reinterpret_cast<const uint4*>(x + r * D + col);
    if constexpr (kResidual) v.res = *reinterpret_cast<const uint4*>(dres + r * D + col);
  };
  const int64_t allTeams = int64_t(gridDim.x) * teams;
  int buf = 0;
  int64_t r = int64_t(blockIdx.x) * teams + team;
  RowVec cur;
  if (r < rows) load(r, cur);
#pragma unroll 1
  for (; r < rows; r += allTeams) {
    // The next row's loads go out before this row's reduction waits on its team.
    RowVec next;
    if (r + allTeams < rows) load(r + allTeams, next);
    float gf[N], xf[N], dot = 0.f;
    Unpack(cur.g, gf);
    Unpack(cur.x, xf);
#pragma unroll
    for (int e = 0; e < N; ++e) {
      dot += gf[e] * wf[e] * xf[e];
      acc[e] += gf[e] * xf[e] * cur.rs;
    }
    dot = WarpSum(dot);
    if (teamWarps > 1) {
      if (threadIdx.x % 32 == 0) warpDot[buf][warp] = dot;
      TeamBarrier(1 + team, teamThreads);
      dot = 0.f;
      for (int wi = 0; wi < teamWarps; ++wi) dot += warpDot[buf][warp0 + wi];
      buf ^= 1;
    }
    const float rs = cur.rs, c3 = rs * rs * rs * dot / float(D);
    float rf[N] = {};
    if constexpr (kResidual) Unpack(cur.res, rf);
#pragma unroll
    for (int e = 0; e < N; ++e) gf[e] = rs * (gf[e] * wf[e]) - c3 * xf[e] + rf[e];
    if (on) *reinterpret_cast<uint4*>(dx + r * D + col) = Pack(gf);
    cur = next;
  }
  // The dw sum may start its blocks now; it waits for this grid's writes before it reads.
  AllowDependents();
  double* out = partial + blockIdx.x * D;
  if (teams == 1) {
#pragma unroll
    for (int e = 0; e < N; ++e) if (on) out[int64_t(t) * N + e] = acc[e];
    return;
  }
  // The teams add into shared memory one after another: a fixed order.
  for (int u = 0; u < teams; ++u) {
    if (team == u && on) {
#pragma unroll
      for (int e = 0; e < N; ++e) blockDw[t * N + e] = (u == 0 ? 0.0 : blockDw[t * N + e]) + acc[e];
    }
    __syncthreads();
  }
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) out[j] = blockDw[j];
}

template <class T, bool kResidual>
bool LaunchVecForward(const void* x, const void* res, const void* w, void* sum, void* y, float* rstd, int64_t rows, int64_t D,
                      float eps) {
  if (D % kVec<T> != 0) return false;
  auto* xp = static_cast<const T*>(x);
  auto* rp = static_cast<const T*>(res);
  auto* wp = static_cast<const T*>(w);
  auto* sp = static_cast<T*>(sum);
  auto* yp = static_cast<T*>(y);
  dim3 grid(RowBlocks(rows)), block(kWarpsPerBlock * 32);
  cudaStream_t s = ComputeStream();
  // The row's vectors a lane, rounded up to a compiled count (6: a 1536-wide bf16 row, whose
  // registers at 8 would hold two unused vectors).
  const int64_t per = (D / kVec<T> + 31) / 32;
  switch (per <= 1 ? 1 : per <= 2 ? 2 : per <= 4 ? 4 : per <= 6 ? 6 : per <= 8 ? 8 : per <= 12 ? 12 : per <= 16 ? 16 : 0) {
    case 1: RmsnormVecKernel<T, 1, kResidual><<<grid, block, 0, s>>>(xp, rp, wp, sp, yp, rstd, rows, D, eps); return true;
    case 2: RmsnormVecKernel<T, 2, kResidual><<<grid, block, 0, s>>>(xp, rp, wp, sp, yp, rstd, rows, D, eps); return true;
    case 4: RmsnormVecKernel<T, 4, kResidual><<<grid, block, 0, s>>>(xp, rp, wp, sp, yp, rstd, rows, D, eps); return true;
    case 6: RmsnormVecKernel<T, 6, kResidual><<<grid, block, 0, s>>>(xp, rp, wp, sp, yp, rstd, rows, D, eps); return true;
    case 8: RmsnormVecKernel<T, 8, kResidual><<<grid, block, 0, s>>>(xp, rp, wp, sp, yp, rstd, rows, D, eps); return true;
    case 12: RmsnormVecKernel<T, 12, kResidual><<<grid, block, 0, s>>>(xp, rp, wp, sp, yp, rstd, rows, D, eps); return true;
    case 16: RmsnormVecKernel<T, 16, kResidual><<<grid, block, 0, s>>>(xp, rp, wp, sp, yp, rstd, rows, D, eps); return true;
    default: return false;
  }
}

/** The team backward and its dw sum; false where D is not that layout's. */
template <class T>
bool LaunchTeamBackward(const void* dy, const void* x, const void* w, const float* rstd, const void* dres, void* dx, float* dw,
                        double* partial, int64_t rows, int64_t D, cudaStream_t s) {
  if (BwdTeamThreads<T>(D) == 0) return false;
  const int teams = BwdTeams<T>(D);
  const int64_t blocks = BwdTeamBlocks<T>(rows, D);
  const unsigned grid = static_cast<unsigned>(blocks), threads = static_cast<unsigned>(teams * BwdTeamThreads<T>(D));
  const size_t smem = teams > 1 ? D * sizeof(double) : 0;
  auto* dyp = static_cast<const T*>(dy);
  auto* xp = static_cast<const T*>(x);
  auto* wp = static_cast<const T*>(w);
  auto* rp = static_cast<const T*>(dres);
  auto* dxp = static_cast<T*>(dx);
  if (dres) {
    RmsnormBackwardTeamKernel<T, true><<<grid, threads, smem, s>>>(dyp, xp, wp, rstd, rp, dxp, partial, rows, D, teams);
  } else {
    RmsnormBackwardTeamKernel<T, false><<<grid, threads, smem, s>>>(dyp, xp, wp, rstd, rp, dxp, partial, rows, D, teams);
  }
  CheckLaunch("rmsnormBackward");
  // The dw sum over the blocks' partial rows: a dependent launch (its setup overlaps the
  // backward's tail) of 32 warps a block, as the 8-warp ColumnSum took 5.8 us of a call here.
  Check("rmsnormBackward", "cudaLaunchKernelEx", ColumnSumAfter<32>(static_cast<const double*>(partial), dw, blocks, D, s));
  CheckLaunch("rmsnormBackward");
  return true;
}

}  // namespace

int64_t RmsnormPartialRows(int64_t rows) {
  int64_t per = RowsPerChunk(rows);
  int64_t chunks = rows == 0 ? 1 : (rows + per - 1) / per;
  // The team backward's blocks: at most one a row, and one an SM.
  int64_t blocks = std::min<int64_t>(rows, SmCount());
  return chunks > blocks ? chunks : blocks;
}

void Rmsnorm(DType dt, const void* x, const void* w, void* y, float* rstd, int64_t rows, int64_t D, float eps) {
  if (rows == 0 || D == 0) return;
  cudaStream_t s = ComputeStream();
  bool vec = dt == DType::F32 ? LaunchVecForward<float, false>(x, nullptr, w, nullptr, y, rstd, rows, D, eps)
                              : LaunchVecForward<bf16, false>(x, nullptr, w, nullptr, y, rstd, rows, D, eps);
  if (!vec && dt == DType::F32) {
    RmsnormKernel<<<RowBlocks(rows), kWarpsPerBlock * 32, 0, s>>>(static_cast<const float*>(x), static_cast<const float*>(w), static_cast<float*>(y), rstd, rows, D, eps);
  } else if (!vec) {
    RmsnormKernel<<<RowBlocks(rows), kWarpsPerBlock * 32, 0, s>>>(static_cast<const bf16*>(x), static_cast<const bf16*>(w), static_cast<bf16*>(y), rstd, rows, D, eps);
  }
  CheckLaunch("rmsnorm");
}

void RmsnormResidual(DType dt, const void* x, const void* residual, const void* w, void* sum, void* y, float* rstd, int64_t rows,
                     int64_t D, float eps) {
  if (rows == 0 || D == 0) return;
  bool vec = dt == DType::F32 ? LaunchVecForward<float, true>(x, residual, w, sum, y, rstd, rows, D, eps)
                              : LaunchVecForward<bf16, true>(x, residual, w, sum, y, rstd, rows, D, eps);
  if (vec) {
    CheckLaunch("rmsnormResidual");
    return;
  }
  Add(dt, x, residual, sum, rows * D);
  Rmsnorm(dt, sum, w, y, rstd, rows, D, eps);
}

void RmsnormBackward(DType dt, const void* dy, const void* x, const void* w, const float* rstd, const void* dres, void* dx,
                     float* dw, double* partial, int64_t rows, int64_t D) {
  if (D == 0) return;
  cudaStream_t s = ComputeStream();
  if (rows == 0) {
    Check("rmsnormBackward", "cudaMemsetAsync", cudaMemsetAsync(dw, 0, D * sizeof(float), s));
    return;
  }
  if (dt == DType::F32 ? LaunchTeamBackward<float>(dy, x, w, rstd, dres, dx, dw, partial, rows, D, s)
                       : LaunchTeamBackward<bf16>(dy, x, w, rstd, dres, dx, dw, partial, rows, D, s)) {
    return;
  }
  unsigned colBlocks = static_cast<unsigned>((D + kThreads - 1) / kThreads);
  int64_t chunks = (rows + RowsPerChunk(rows) - 1) / RowsPerChunk(rows);
  dim3 colGrid(colBlocks, static_cast<unsigned>(chunks));
  if (dt == DType::F32) {
    auto* dyp = static_cast<const float*>(dy);
    auto* xp = static_cast<const float*>(x);
    RmsnormDxKernel<<<RowBlocks(rows), kWarpsPerBlock * 32, 0, s>>>(dyp, xp, static_cast<const float*>(w), rstd, static_cast<float*>(dx), rows, D);
    CheckLaunch("rmsnormBackward");
    RmsnormDwPartialKernel<<<colGrid, kThreads, 0, s>>>(dyp, xp, rstd, partial, rows, D, RowsPerChunk(rows));
  } else {
    auto* dyp = static_cast<const bf16*>(dy);
    auto* xp = static_cast<const bf16*>(x);
    RmsnormDxKernel<<<RowBlocks(rows), kWarpsPerBlock * 32, 0, s>>>(dyp, xp, static_cast<const bf16*>(w), rstd, static_cast<bf16*>(dx), rows, D);
    CheckLaunch("rmsnormBackward");
    RmsnormDwPartialKernel<<<colGrid, kThreads, 0, s>>>(dyp, xp, rstd, partial, rows, D, RowsPerChunk(rows));
  }
  CheckLaunch("rmsnormBackward");
  ColumnSum(partial, dw, chunks, D, s);
  CheckLaunch("rmsnormBackward");
  if (dres) AddInto(dt, dx, dt, dres, 1.f, rows * D);  // the scalar path adds the residual in a pass of its own
}

}  // namespace tessera::cuda
