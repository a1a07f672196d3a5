// Rotary embeddings (HF rotate_half: pairs (i, i + Dh/2)), forward and its transpose. The
// frequency table comes from the host (ropeFrequencies in native/rope.ts, the CPU's schedule)
// as a kernel argument; angles are fp32 pos * inv_freq and cos/sin are scaled by the
// attention factor, as the CPU kernel computes them.
// cos / sin are formed once per (token, frequency) and applied to every head.
// Floor: reads and writes T*H*Dh elements.
//
// The table path: RopeTable forms a batch's cos / sin once ([T, 2, Dh/2] fp32: the cos row, then
// the sin row), and RopeWithTable reads them in every layer's q, k and their backward instead of
// forming them per call. A table entry is the angle as the fp32 product above, its cos / sin in
// double times the attention factor, rounded once: the direct path's values within fp32
// rounding. RopeGroupsWithTable rotates a layer's q and k in one launch, and moves v beside them
// where q, k and v come from one fused projection's [T, (Hq + 2 Hk) Dh] (ropeQKVSplit); the way
// back into that projection's gradient, with its column sums, is RopeCatKernel.
#include "cuda/column_sum.cuh"
#include "cuda/kernels.h"
#include "cuda/vec.cuh"

namespace tessera::cuda {
namespace {

struct Freqs {
  float f[kMaxRopeHalf];
};

// The host's half frequencies as a kernel argument; a head dim past 2 * kMaxRopeHalf is an Error naming op.
Freqs FreqsOf(const char* op, const float* invFreq, int64_t half) {
  if (half > kMaxRopeHalf) {
    throw OpError(std::string(op) + ": head dim " + std::to_string(2 * half) + " exceeds " + std::to_string(2 * kMaxRopeHalf) + " on cuda");
  }
  Freqs f{};
  for (int64_t i = 0; i < half; ++i) f.f[i] = invFreq[i];
  return f;
}

// One pair (a, b) rotated by cos c / sin s, with the contraction into FMAs spelt out, so every
// kernel that rotates rounds alike (the backward's cat must equal the backward rope bit for bit).
__device__ __forceinline__ void Rotate(float a, float b, float c, float s, float& ya, float& yb) {
  ya = __fmaf_rn(a, c, -__fmul_rn(b, s));
  yb = __fmaf_rn(b, c, __fmul_rn(a, s));
}

// The N pairs (x[i], x[i + half]) rotated by cos c / sin s into (ya, yb), N elements a load.
template <class T, int N>
__device__ __forceinline__ void RotatePairs(const T* x, int64_t half, const float (&c)[N], const float (&s)[N], float (&ya)[N],
                                            float (&yb)[N]) {
  float a[N], b[N];
  LoadVec<N>(x, a);
  LoadVec<N>(x + half, b);
#pragma unroll
  for (int e = 0; e < N; ++e) Rotate(a[e], b[e], c[e], s[e], ya[e], yb[e]);
}

// A thread takes N consecutive frequencies of one token: it forms their cos / sin once, then
// rotates those pairs in every head (heads are 2 * half apart), moving N elements per load.
template <class T, int N>
__global__ void RopeKernel(const T* x, const int32_t* pos, Freqs freqs, float attnScale, float sign, T* y, int64_t T_, int64_t H,
                           int64_t half) {
  const int64_t groups = half / N;
  const int64_t n = T_ * groups;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = k / groups;
    const int64_t i0 = (k - t * groups) * N;
    const float p = static_cast<float>(pos[t]);
    float c[N], s[N];
#pragma unroll
    for (int e = 0; e < N; ++e) {
      float ang = p * freqs.f[i0 + e];
      c[e] = static_cast<float>(static_cast<double>(cosf(ang)) * attnScale);
      s[e] = static_cast<float>(static_cast<double>(sinf(ang)) * attnScale) * sign;
    }
    for (int64_t h = 0; h < H; ++h) {
      const int64_t base = (t * H + h) * 2 * half + i0;
      float ya[N], yb[N];
      RotatePairs<T, N>(x + base, half, c, s, ya, yb);
      StoreVec<N>(y + base, ya);
      StoreVec<N>(y + base + half, yb);
    }
  }
}

template <class E>
void Launch(const void* x, const int32_t* positions, const Freqs& f, float attnScale, float sign, void* y, int64_t T, int64_t H,
            int64_t half) {
  constexpr int N = kVec<E>;
  auto* xp = static_cast<const E*>(x);
  auto* yp = static_cast<E*>(y);
  cudaStream_t s = ComputeStream();
  if (half % N == 0) RopeKernel<E, N><<<GridFor(T * half / N), kThreads, 0, s>>>(xp, positions, f, attnScale, sign, yp, T, H, half);
  else RopeKernel<E, 1><<<GridFor(T * half), kThreads, 0, s>>>(xp, positions, f, attnScale, sign, yp, T, H, half);
}

// a[g] of a kernel parameter's array by selects, which keep the array out of local memory (an
// index that is not a compile-time constant would copy it there).
template <class A>
__device__ __forceinline__ A Pick(const A (&a)[3], int g) {
  return g == 0 ? a[0] : g == 1 ? a[1] : a[2];
}

// The group (0 q, 1 k, 2 v) of a head counted over the groups in turn; h becomes its index there.
__device__ __forceinline__ int GroupOf(const int64_t (&heads)[3], int64_t& h) {
  if (h < heads[0]) return 0;
  h -= heads[0];
  if (h < heads[1]) return 1;
  h -= heads[1];
  return 2;
}

// One thread per (token, head, N frequencies) over a token's heads of each group in turn,
// frequencies fastest: 8 threads move a head's 128 contiguous bytes of each half, and a token's
// table row, read by each of its heads, stays in L1. In the 1.5B step this one launch takes 21.9
// us for q + k (floor 19.6; a plain copy of the same bytes: 21.6 us), once StoreVec was made to
// emit whole 16-byte stores (nvcc had split this kernel's into 2-byte ones: 73 us). Threads
// taking 2, 4 or 7 heads each, the table row read once for them, measured slower (29.5, 27.9,
// 33.2 us against 24.9 in a probe): fewer threads in flight, not the table, set the pace.
// Group 2 (v) is moved, not rotated: the fused q/k/v split reads all three from one tensor.
template <class T, int N>
__global__ void RopeWithTableKernel(RopeGroups p, const float* __restrict__ table, float sign, int64_t T_, int64_t half) {
  const int64_t groups = half / N;
  const int64_t H = p.heads[0] + p.heads[1] + p.heads[2];
  const int64_t n = T_ * H * groups;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t th = k / groups;  // t * H + h
    const int64_t i0 = (k - th * groups) * N;
    const int64_t t = th / H;
    int64_t h = th - t * H;
    const int g = GroupOf(p.heads, h);
    const T* x = static_cast<const T*>(Pick(p.x, g)) + t * Pick(p.xRow, g) + h * 2 * half + i0;
    T* y = static_cast<T*>(Pick(p.y, g)) + t * Pick(p.yRow, g) + h * 2 * half + i0;
    float ya[N], yb[N];
    if (g == 2) {
      LoadVec<N>(x, ya);
      LoadVec<N>(x + half, yb);
    } else {
      const float* cs = table + t * 2 * half + i0;
      float c[N], s[N];
      LoadVec<N>(cs, c);
      LoadVec<N>(cs + half, s);
#pragma unroll
      for (int e = 0; e < N; ++e) s[e] *= sign;
      RotatePairs<T, N>(x, half, c, s, ya, yb);
    }
    StoreVec<N>(y, ya);
    StoreVec<N>(y + half, yb);
  }
}

template <class E>
void LaunchWithTable(const RopeGroups& p, const float* table, float sign, int64_t T, int64_t half) {
  constexpr int N = kVec<E>;
  const int64_t H = p.heads[0] + p.heads[1] + p.heads[2];
  // The vector path needs every head's halves 16-byte aligned: row strides in whole vectors.
  bool vec = half % N == 0;
  for (int g = 0; g < 3; ++g) vec = vec && p.xRow[g] % N == 0 && p.yRow[g] % N == 0;
  cudaStream_t s = ComputeStream();
  if (vec) RopeWithTableKernel<E, N><<<GridFor(T * H * half / N), kThreads, 0, s>>>(p, table, sign, T, half);
  else RopeWithTableKernel<E, 1><<<GridFor(T * H * half), kThreads, 0, s>>>(p, table, sign, T, half);
}

__device__ __forceinline__ float Stored(float v, float*) { return v; }
__device__ __forceinline__ float Stored(float v, bf16*) { return __bfloat162float(__float2bfloat16_rn(v)); }

// ropeQKVBackwardCat: dq and dk rotated back and dv moved into the fused projection's gradient
// [T, H Dh] (H = Hq + 2 Hk: head hh of the output is head hh of q, then k, then v), optionally
// with its column sums, which are the fused projection's bias gradient. Shaped as SumRowsPartial
// (bias.cu) so the sums come in the same pass: a lane owns N frequencies of one head (output
// columns i0.. and half + i0..), a block's 32 lanes x kCatGroups row groups take a chunk of
// kCatChunk rows, kCatRows rows a thread, all of whose loads are issued before the first store (a
// store may alias the next row's load as far as the compiler knows, which otherwise leaves one
// row in flight a thread). Each block leaves one fp64 partial row per chunk, summed in chunk
// order by ColumnSum: the same sums every run. The inputs may be the attention backward's fp32
// sums (no bf16 round trip before the rotation); what is summed is each value as stored.
constexpr int kCatLanes = 32, kCatRows = 4, kCatGroups = 16;
constexpr int64_t kCatChunk = kCatGroups * kCatRows;

template <class TX, class TY, int N>
__global__ void __launch_bounds__(kCatLanes* kCatGroups) RopeCatKernel(RopeCat a, const float* __restrict__ table, int64_t T_,
                                                                      int64_t half, double* __restrict__ partial) {
  static_assert(2 * N <= kCatGroups, "one thread a block's column sum");
  __shared__ float groupSums[kCatGroups][2 * N][kCatLanes];  // 16 KB at N = 4
  const int lane = threadIdx.x, grp = threadIdx.y;
  const int64_t G = half / N, H = a.heads[0] + a.heads[1] + a.heads[2], width = H * 2 * half;
  const int64_t unit = blockIdx.x * int64_t(kCatLanes) + lane;
  const int64_t hh = unit / G, i0 = (unit - hh * G) * N;
  const bool active = hh < H;
  int64_t h = hh;
  const int g = GroupOf(a.heads, h);
  const bool rotate = g != 2;
  const int64_t xRow = Pick(a.heads, g) * 2 * half;
  const TX* __restrict__ x = static_cast<const TX*>(Pick(a.x, g)) + h * 2 * half + i0;
  TY* __restrict__ y = static_cast<TY*>(a.y) + hh * 2 * half + i0;
  const int64_t chunks = (T_ + kCatChunk - 1) / kCatChunk;
  for (int64_t chunk = blockIdx.y; chunk < chunks; chunk += gridDim.y) {
    float sa[N] = {}, sb[N] = {};
    if (active) {
      // Row k of this thread: t = chunk's first + grp + k kCatGroups; rows past T repeat the last
      // row's loads and are neither stored nor summed.
      float xa[kCatRows][N], xb[kCatRows][N], c[kCatRows][N], sn[kCatRows][N];
#pragma unroll
      for (int k = 0; k < kCatRows; ++k) {
        const int64_t t = min(T_ - 1, chunk * kCatChunk + grp + int64_t(k) * kCatGroups);
        LoadVec<N>(x + t * xRow, xa[k]);
        LoadVec<N>(x + t * xRow + half, xb[k]);
        if (rotate) {
          LoadVec<N>(table + t * 2 * half + i0, c[k]);
          LoadVec<N>(table + t * 2 * half + half + i0, sn[k]);
        }
      }
#pragma unroll
      for (int k = 0; k < kCatRows; ++k) {
        const int64_t t = chunk * kCatChunk + grp + int64_t(k) * kCatGroups;
        if (t >= T_) break;
        float ya[N], yb[N];
#pragma unroll
        for (int e = 0; e < N; ++e) {
          if (rotate) {
            Rotate(xa[k][e], xb[k][e], c[k][e], -sn[k][e], ya[e], yb[e]);  // the inverse: sin negated
          } else {
            ya[e] = xa[k][e];
            yb[e] = xb[k][e];
          }
        }
        TY* yt = y + t * width;
        StoreVec<N>(yt, ya);
        StoreVec<N>(yt + half, yb);
#pragma unroll
        for (int e = 0; e < N; ++e) {
          sa[e] += Stored(ya[e], yt);
          sb[e] += Stored(yb[e], yt);
        }
      }
    }
    if (!partial) continue;
#pragma unroll
    for (int e = 0; e < N; ++e) {
      groupSums[grp][e][lane] = sa[e];
      groupSums[grp][N + e][lane] = sb[e];
    }
    __syncthreads();
    // The block's 2N x 32 column sums, one a thread, each over the groups in order.
    const int f = grp * kCatLanes + lane;
    if (f < 2 * N * kCatLanes) {
      const int e = f / kCatLanes, l = f % kCatLanes;
      const int64_t u = blockIdx.x * int64_t(kCatLanes) + l, uh = u / G;
      if (uh < H) {
        double t = 0;
        for (int w = 0; w < kCatGroups; ++w) t += groupSums[w][e][l];
        partial[chunk * width + uh * 2 * half + (u - uh * G) * N + (e < N ? e : half + e - N)] = t;
      }
    }
    __syncthreads();
  }
  AllowDependents();
}

template <class TX, class TY>
void LaunchCat(const RopeCat& a, const float* table, int64_t T, int64_t half, double* partial, int64_t chunks) {
  // Four frequencies a lane: one 16-byte load of fp32 input and of the table (8 bytes of bf16
  // input); eight at bf16 would spill the rows' registers.
  constexpr int N = 4;
  const int64_t H = a.heads[0] + a.heads[1] + a.heads[2];
  const dim3 block(kCatLanes, kCatGroups);
  const unsigned rowsOfBlocks = static_cast<unsigned>(chunks < 65535 ? chunks : 65535);
  cudaStream_t s = ComputeStream();
  // The vector path: whole vectors in every head half (the tensors start 16-byte aligned).
  if (half % N == 0) {
    const dim3 grid(static_cast<unsigned>((H * half / N + kCatLanes - 1) / kCatLanes), rowsOfBlocks);
    RopeCatKernel<TX, TY, N><<<grid, block, 0, s>>>(a, table, T, half, partial);
  } else {
    const dim3 grid(static_cast<unsigned>((H * half + kCatLanes - 1) / kCatLanes), rowsOfBlocks);
    RopeCatKernel<TX, TY, 1><<<grid, block, 0, s>>>(a, table, T, half, partial);
  }
}

__global__ void RopeTableKernel(const int32_t* pos, Freqs freqs, double attnScale, float* table, int64_t T_, int64_t half) {
  const int64_t n = T_ * half;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = k / half, i = k - t * half;
    const double ang = __fmul_rn(static_cast<float>(pos[t]), freqs.f[i]);
    table[t * 2 * half + i] = static_cast<float>(cos(ang) * attnScale);
    table[t * 2 * half + half + i] = static_cast<float>(sin(ang) * attnScale);
  }
}

}  // namespace

void RopeTable(const int32_t* positions, const float* invFreq, double attnScale, float* table, int64_t T, int64_t half) {
  const Freqs f = FreqsOf("ropeTable", invFreq, half);
  if (T * half == 0) return;
  RopeTableKernel<<<GridFor(T * half), kThreads, 0, ComputeStream()>>>(positions, f, attnScale, table, T, half);
  CheckLaunch("ropeTable");
}

void RopeGroupsWithTable(DType dt, const RopeGroups& groups, const float* table, bool inverse, int64_t T, int64_t Dh, const char* op) {
  const int64_t half = Dh / 2;
  if (T * (groups.heads[0] + groups.heads[1] + groups.heads[2]) * half == 0) return;
  const float sign = inverse ? -1.f : 1.f;
  if (dt == DType::F32) LaunchWithTable<float>(groups, table, sign, T, half);
  else LaunchWithTable<bf16>(groups, table, sign, T, half);
  CheckLaunch(op);
}

int64_t RopeQKVBackwardCatPartials(int64_t T) { return T == 0 ? 1 : (T + kCatChunk - 1) / kCatChunk; }

void RopeQKVBackwardCat(DType xDt, DType yDt, const RopeCat& a, const float* table, float* sums, double* partial, int64_t T,
                        int64_t Dh) {
  const char* op = "ropeQKVBackwardCat";
  const int64_t half = Dh / 2, width = (a.heads[0] + a.heads[1] + a.heads[2]) * Dh;
  if (width == 0) return;
  cudaStream_t s = ComputeStream();
  if (T == 0) {
    if (sums) Check(op, "cudaMemsetAsync", cudaMemsetAsync(sums, 0, width * sizeof(float), s));
    return;
  }
  const int64_t chunks = RopeQKVBackwardCatPartials(T);
  double* part = sums ? partial : nullptr;
  if (xDt == DType::BF16 && yDt == DType::BF16) LaunchCat<bf16, bf16>(a, table, T, half, part, chunks);
  else if (xDt == DType::F32 && yDt == DType::BF16) LaunchCat<float, bf16>(a, table, T, half, part, chunks);
  else if (xDt == DType::F32 && yDt == DType::F32) LaunchCat<float, float>(a, table, T, half, part, chunks);
  else throw OpError(std::string(op) + ": " + DTypeName(xDt) + " gradients cannot give a " + DTypeName(yDt) + " output");
  CheckLaunch(op);
  if (sums) Check(op, "cudaLaunchKernelEx", ColumnSumAfter(partial, sums, chunks, width, s));
}

void Rope(DType dt, const void* x, const int32_t* positions, const float* invFreq, float attnScale, bool inverse, void* y,
          int64_t T, int64_t H, int64_t Dh) {
  const char* op = inverse ? "ropeBackward" : "rope";
  int64_t half = Dh / 2;
  const Freqs f = FreqsOf(op, invFreq, half);
  if (T * H * half == 0) return;
  float sign = inverse ? -1.f : 1.f;
  if (dt == DType::F32) Launch<float>(x, positions, f, attnScale, sign, y, T, H, half);
  else Launch<bf16>(x, positions, f, attnScale, sign, y, T, H, half);
  CheckLaunch(op);
}

}  // namespace tessera::cuda
