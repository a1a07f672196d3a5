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
// where q, k and v come from (or go to) one fused projection's [T, (Hq + 2 Hk) Dh].
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

// The N pairs (x[i], x[i + half]) rotated by cos c / sin s into (ya, yb), N elements a load.
template <class T, int N>
__device__ __forceinline__ void RotatePairs(const T* x, int64_t half, const float (&c)[N], const float (&s)[N], float (&ya)[N],
                                            float (&yb)[N]) {
  float a[N], b[N];
  LoadVec<N>(x, a);
  LoadVec<N>(x + half, b);
#pragma unroll
  for (int e = 0; e < N; ++e) {
    ya[e] = a[e] * c[e] - b[e] * s[e];
    yb[e] = b[e] * c[e] + a[e] * s[e];
  }
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
    int g = 0;
    if (h >= p.heads[0]) {
      h -= p.heads[0];
      g = 1;
      if (h >= p.heads[1]) {
        h -= p.heads[1];
        g = 2;
      }
    }
    const T* x = static_cast<const T*>(g == 0 ? p.x[0] : g == 1 ? p.x[1] : p.x[2]) +
                 t * (g == 0 ? p.xRow[0] : g == 1 ? p.xRow[1] : p.xRow[2]) + h * 2 * half + i0;
    T* y = static_cast<T*>(g == 0 ? p.y[0] : g == 1 ? p.y[1] : p.y[2]) +
           t * (g == 0 ? p.yRow[0] : g == 1 ? p.yRow[1] : p.yRow[2]) + h * 2 * half + i0;
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
