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
// rounding. Reading the table (through L1, shared by a token's heads) costs about what forming
// cos / sin did: at 1.5B, kernel time q 31.3 us (direct 29.1), k 7.2 us (direct 8.9); see NOTES.
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
      float a[N], b[N], ya[N], yb[N];
      LoadVec<N>(x + base, a);
      LoadVec<N>(x + base + half, b);
#pragma unroll
      for (int e = 0; e < N; ++e) {
        ya[e] = a[e] * c[e] - b[e] * s[e];
        yb[e] = b[e] * c[e] + a[e] * s[e];
      }
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

// One thread per (token, head, N frequencies): the table's N cos and N sin (shared by a token's
// heads, so mostly L1/L2 hits) against N pairs of x.
template <class T, int N>
__global__ void RopeWithTableKernel(const T* __restrict__ x, const float* __restrict__ table, float sign, T* __restrict__ y,
                                    int64_t T_, int64_t H, int64_t half) {
  const int64_t groups = half / N;
  const int64_t n = T_ * H * groups;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t th = k / groups;  // t * H + h
    const int64_t i0 = (k - th * groups) * N;
    const float* cs = table + (th / H) * 2 * half + i0;
    const int64_t base = th * 2 * half + i0;
    float c[N], s[N], a[N], b[N], ya[N], yb[N];
    LoadVec<N>(cs, c);
    LoadVec<N>(cs + half, s);
    LoadVec<N>(x + base, a);
    LoadVec<N>(x + base + half, b);
#pragma unroll
    for (int e = 0; e < N; ++e) {
      const float se = s[e] * sign;
      ya[e] = a[e] * c[e] - b[e] * se;
      yb[e] = b[e] * c[e] + a[e] * se;
    }
    StoreVec<N>(y + base, ya);
    StoreVec<N>(y + base + half, yb);
  }
}

template <class E>
void LaunchWithTable(const void* x, const float* table, float sign, void* y, int64_t T, int64_t H, int64_t half) {
  constexpr int N = kVec<E>;
  auto* xp = static_cast<const E*>(x);
  auto* yp = static_cast<E*>(y);
  cudaStream_t s = ComputeStream();
  if (half % N == 0) RopeWithTableKernel<E, N><<<GridFor(T * H * half / N), kThreads, 0, s>>>(xp, table, sign, yp, T, H, half);
  else RopeWithTableKernel<E, 1><<<GridFor(T * H * half), kThreads, 0, s>>>(xp, table, sign, yp, T, H, half);
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

void RopeWithTable(DType dt, const void* x, const float* table, bool inverse, void* y, int64_t T, int64_t H, int64_t Dh) {
  const int64_t half = Dh / 2;
  if (T * H * half == 0) return;
  const float sign = inverse ? -1.f : 1.f;
  if (dt == DType::F32) LaunchWithTable<float>(x, table, sign, y, T, H, half);
  else LaunchWithTable<bf16>(x, table, sign, y, T, H, half);
  CheckLaunch(inverse ? "ropeBackwardWithTable" : "ropeWithTable");
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
