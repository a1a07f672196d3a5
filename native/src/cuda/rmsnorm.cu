// RMSNorm forward and backward: one warp per row (rows of D elements, fp32 accumulation).
// Where D is a multiple of the 16-byte vector (8 bf16, 4 fp32) and small enough for a warp to
// hold a row in registers (forward: D <= 512 vectors, backward: 256), the row is read once with
// vector loads; the backward then also forms the weight gradient in the same pass: each warp
// sums dy * x * rstd over its rows in fp32, each block adds its warps in a fixed order (fp64)
// into one partial row, and a last kernel sums the blocks' partials. Other shapes take the
// scalar kernels, whose weight gradient is a second pass over fixed row chunks. No atomics in
// either: the same on every run.
// Floor: forward reads x (R*D) and writes y (R*D) (with the residual: reads two, writes two);
// backward reads dy and x (and the residual's gradient when given) and writes dx (the scalar
// path reads dy and x twice).
#include "cuda/kernels.h"
#include "cuda/column_sum.cuh"
#include "cuda/rows.cuh"

namespace tessera::cuda {
namespace {


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

constexpr int kMaxFwdVecsPerLane = 16;
constexpr int kMaxBwdVecsPerLane = 8;
// Blocks of the vector backward (one an SM: the row in registers takes up to 255 a thread), and
// so the partial rows to sum.
constexpr int64_t kBwdBlocks = 132;

template <class T>
__device__ __forceinline__ float RoundTo(float v) {
  T t;
  Store(&t, 0, v);
  return Load(&t, 0);
}

// Lane l holds the row's vectors l, l + 32, ...; NV bounds how many (the row's vectors / 32, rounded up).
template <class T, int NV, bool kResidual>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) RmsnormVecKernel(const T* x, const T* res, const T* w, T* sum, T* y,
                                                                        float* rstd, int64_t rows, int64_t D, float eps) {
  constexpr int N = kVec<T>;
  using VT = Vec<T, N>;
  const int64_t r = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const int64_t vecs = D / N;
  const VT* xr = reinterpret_cast<const VT*>(x + r * D);
  VT v[NV];
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int64_t k = lane + 32 * i;
    if (k >= vecs) break;
    v[i] = xr[k];
    float f[N];
    ToFloat<N>(v[i], f);
    if constexpr (kResidual) {
      float g[N];
      ToFloat<N>(reinterpret_cast<const VT*>(res + r * D)[k], g);
      // The norm sees the sum as stored, so it matches add-then-rmsnorm.
#pragma unroll
      for (int e = 0; e < N; ++e) f[e] += g[e];
      v[i] = FromFloat<N, T>(f);
      reinterpret_cast<VT*>(sum + r * D)[k] = v[i];
      ToFloat<N>(v[i], f);
    }
#pragma unroll
    for (int e = 0; e < N; ++e) ss += f[e] * f[e];
  }
  ss = WarpSum(ss);
  const float rs = 1.f / sqrtf(ss / float(D) + eps);
  if (lane == 0) rstd[r] = rs;
  VT* yr = reinterpret_cast<VT*>(y + r * D);
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int64_t k = lane + 32 * i;
    if (k >= vecs) break;
    float f[N], wf[N];
    ToFloat<N>(v[i], f);
    LoadVec<N>(w + k * N, wf);
#pragma unroll
    for (int e = 0; e < N; ++e) f[e] = f[e] * rs * wf[e];
    yr[k] = FromFloat<N, T>(f);
  }
}

// dx as RmsnormDxKernel; a fixed grid of warps walks the rows (row r to warp r mod warps), so
// which rows each warp sums into its dw partial does not change between runs.
template <class T, int NV>
__global__ void __launch_bounds__(kWarpsPerBlock * 32, 1) RmsnormBackwardVecKernel(const T* dy, const T* x, const T* w,
                                                                                const float* rstd, const T* dres, T* dx,
                                                                                double* partial, int64_t rows, int64_t D) {
  constexpr int N = kVec<T>;
  using VT = Vec<T, N>;
  extern __shared__ double blockDw[];  // D
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t vecs = D / N;
  const int64_t warps = int64_t(gridDim.x) * kWarpsPerBlock;
  float acc[NV][N] = {};
  for (int64_t r = blockIdx.x * int64_t(kWarpsPerBlock) + warp; r < rows; r += warps) {
    const VT* gr = reinterpret_cast<const VT*>(dy + r * D);
    const VT* xr = reinterpret_cast<const VT*>(x + r * D);
    const VT* rr = reinterpret_cast<const VT*>(dres + r * D);
    // The row's dy, x (and residual gradient) are all loaded before any is used, so a warp has
    // every load of its row in flight at once (a loop that breaks at the row's end waits on each).
    // At 8 vectors a lane the residual's would spill: it is loaded in the second pass there.
    constexpr bool kHoldRes = NV <= 6;
    VT g[NV], xv[NV], rv[NV];
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int64_t k = lane + 32 * i;
      if (k < vecs) {
        g[i] = gr[k];
        xv[i] = xr[k];
        if (kHoldRes && dres) rv[i] = rr[k];
      }
    }
    float dot = 0.f;
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int64_t k = lane + 32 * i;
      if (k < vecs) {
        float gf[N], xf[N], wf[N];
        ToFloat<N>(g[i], gf);
        ToFloat<N>(xv[i], xf);
        LoadVec<N>(w + k * N, wf);
#pragma unroll
        for (int e = 0; e < N; ++e) dot += gf[e] * wf[e] * xf[e];
      }
    }
    dot = WarpSum(dot);
    const float rs = rstd[r];
    const float c3 = rs * rs * rs * dot / float(D);
    VT* o = reinterpret_cast<VT*>(dx + r * D);
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int64_t k = lane + 32 * i;
      if (k < vecs) {
        float gf[N], xf[N], wf[N], rf[N] = {};
        ToFloat<N>(g[i], gf);
        ToFloat<N>(xv[i], xf);
        LoadVec<N>(w + k * N, wf);
        if (dres) ToFloat<N>(kHoldRes ? rv[i] : rr[k], rf);
#pragma unroll
        for (int e = 0; e < N; ++e) {
          acc[i][e] += gf[e] * xf[e] * rs;
          gf[e] = rs * (gf[e] * wf[e]) - c3 * xf[e] + rf[e];
        }
        o[k] = FromFloat<N, T>(gf);
      }
    }
  }
  // The block's warps add into shared memory one after another: a fixed order.
  for (int wi = 0; wi < kWarpsPerBlock; ++wi) {
    if (warp == wi) {
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        const int64_t k = lane + 32 * i;
        if (k >= vecs) break;
#pragma unroll
        for (int e = 0; e < N; ++e) blockDw[k * N + e] = (wi == 0 ? 0.0 : blockDw[k * N + e]) + acc[i][e];
      }
    }
    __syncthreads();
  }
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) partial[blockIdx.x * D + j] = blockDw[j];
}

int64_t BwdBlocks(int64_t rows) { return WalkingBlocks(rows, kBwdBlocks); }

template <class T, bool kResidual>
bool LaunchVecForward(const void* x, const void* res, const void* w, void* sum, void* y, float* rstd, int64_t rows, int64_t D,
                      float eps) {
  auto* xp = static_cast<const T*>(x);
  auto* rp = static_cast<const T*>(res);
  auto* wp = static_cast<const T*>(w);
  auto* sp = static_cast<T*>(sum);
  auto* yp = static_cast<T*>(y);
  dim3 grid(RowBlocks(rows)), block(kWarpsPerBlock * 32);
  cudaStream_t s = ComputeStream();
  switch (VecsPerLane<T>(D)) {
    case 1: RmsnormVecKernel<T, 1, kResidual><<<grid, block, 0, s>>>(xp, rp, wp, sp, yp, rstd, rows, D, eps); return true;
    case 2: RmsnormVecKernel<T, 2, kResidual><<<grid, block, 0, s>>>(xp, rp, wp, sp, yp, rstd, rows, D, eps); return true;
    case 4: RmsnormVecKernel<T, 4, kResidual><<<grid, block, 0, s>>>(xp, rp, wp, sp, yp, rstd, rows, D, eps); return true;
    case 8: RmsnormVecKernel<T, 8, kResidual><<<grid, block, 0, s>>>(xp, rp, wp, sp, yp, rstd, rows, D, eps); return true;
    case 16: RmsnormVecKernel<T, kMaxFwdVecsPerLane, kResidual><<<grid, block, 0, s>>>(xp, rp, wp, sp, yp, rstd, rows, D, eps); return true;
    default: return false;
  }
}

template <class T>
bool LaunchVecBackward(const void* dy, const void* x, const void* w, const float* rstd, const void* dres, void* dx, double* partial,
                       int64_t rows, int64_t D) {
  auto* rp = static_cast<const T*>(dres);
  auto* dyp = static_cast<const T*>(dy);
  auto* xp = static_cast<const T*>(x);
  auto* wp = static_cast<const T*>(w);
  auto* dxp = static_cast<T*>(dx);
  dim3 grid(static_cast<unsigned>(BwdBlocks(rows))), block(kWarpsPerBlock * 32);
  size_t smem = D * sizeof(double);
  cudaStream_t s = ComputeStream();
  // A 6-vector case too: a 1536-wide bf16 row (the 1.5B model) is 6 vectors a lane, and the row
  // lives in registers here, so rounding up to 8 would hold two unused ones.
  const int per = VecsPerLane<T>(D) == 8 && (D / kVec<T> + 31) / 32 <= 6 ? 6 : VecsPerLane<T>(D);
  switch (per) {
    case 1: RmsnormBackwardVecKernel<T, 1><<<grid, block, smem, s>>>(dyp, xp, wp, rstd, rp, dxp, partial, rows, D); return true;
    case 2: RmsnormBackwardVecKernel<T, 2><<<grid, block, smem, s>>>(dyp, xp, wp, rstd, rp, dxp, partial, rows, D); return true;
    case 4: RmsnormBackwardVecKernel<T, 4><<<grid, block, smem, s>>>(dyp, xp, wp, rstd, rp, dxp, partial, rows, D); return true;
    case 6: RmsnormBackwardVecKernel<T, 6><<<grid, block, smem, s>>>(dyp, xp, wp, rstd, rp, dxp, partial, rows, D); return true;
    case 8: RmsnormBackwardVecKernel<T, kMaxBwdVecsPerLane><<<grid, block, smem, s>>>(dyp, xp, wp, rstd, rp, dxp, partial, rows, D); return true;
    default: return false;
  }
}

}  // namespace

int64_t RmsnormPartialRows(int64_t rows) {
  int64_t per = RowsPerChunk(rows);
  int64_t chunks = rows == 0 ? 1 : (rows + per - 1) / per;
  int64_t blocks = BwdBlocks(rows);
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
  unsigned colBlocks = static_cast<unsigned>((D + kThreads - 1) / kThreads);
  bool vec = dt == DType::F32 ? LaunchVecBackward<float>(dy, x, w, rstd, dres, dx, partial, rows, D)
                              : LaunchVecBackward<bf16>(dy, x, w, rstd, dres, dx, partial, rows, D);
  if (vec) {
    CheckLaunch("rmsnormBackward");
    ColumnSum(partial, dw, BwdBlocks(rows), D, s);
    CheckLaunch("rmsnormBackward");
    return;
  }
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
