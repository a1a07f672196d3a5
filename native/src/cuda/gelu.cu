// GELU, tanh approximation (HF gelu_new / gelu_pytorch_tanh: GPT-2's MLP), and its backward,
// elementwise in fp32. The body runs on 16-byte vectors (every device block is 16-byte aligned
// and a row view starts so: viewRows); the n % 8 (bf16) or n % 4 (fp32) elements past the last whole
// vector go through the same grid-stride loop one at a time.
// Floor: forward reads n and writes n elements; backward reads 2n and writes n.
#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/kernels.h"
#include "cuda/vec.cuh"

namespace tessera::cuda {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

// gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3). Returns gelu(x) and sets
// dgelu/dx = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) du/dx: the forward and backward share it,
// so they cannot disagree on the formula (the compiler drops what a caller does not use).
__device__ __forceinline__ float GeluTanh(float x, float& slope) {
  const float th = tanhf(kSqrt2OverPi * (x + kCubic * x * x * x));
  const float du = kSqrt2OverPi * (1.f + 3.f * kCubic * x * x);
  slope = 0.5f * (1.f + th) + 0.5f * x * (1.f - th * th) * du;
  return 0.5f * x * (1.f + th);
}

template <class T>
__global__ void GeluKernel(const T* x, T* y, int64_t n) {
  constexpr int N = kVec<T>;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t nv = n / N;
  float unused;
  for (int64_t i = first; i < nv; i += stride) {
    float v[N];
    LoadVec<N>(x + i * N, v);
#pragma unroll
    for (int j = 0; j < N; ++j) v[j] = GeluTanh(v[j], unused);
    StoreVec<N>(y + i * N, v);
  }
  for (int64_t i = nv * N + first; i < n; i += stride) Store(y, i, GeluTanh(Load(x, i), unused));
}

// dx = dy * gelu'(x).
template <class T>
__global__ void GeluBackwardKernel(const T* dy, const T* x, T* dx, int64_t n) {
  constexpr int N = kVec<T>;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t nv = n / N;
  for (int64_t i = first; i < nv; i += stride) {
    float v[N], d[N];
    LoadVec<N>(x + i * N, v);
    LoadVec<N>(dy + i * N, d);
#pragma unroll
    for (int j = 0; j < N; ++j) {
      float slope;
      GeluTanh(v[j], slope);
      d[j] *= slope;
    }
    StoreVec<N>(dx + i * N, d);
  }
  for (int64_t i = nv * N + first; i < n; i += stride) {
    float slope;
    GeluTanh(Load(x, i), slope);
    Store(dx, i, Load(dy, i) * slope);
  }
}

/** Blocks for the vector loop (at least one, for a tail alone). */
template <class T>
unsigned GeluGrid(int64_t n) {
  return GridFor((n + kVec<T> - 1) / kVec<T>);
}

}  // namespace

void Gelu(DType dt, const void* x, void* y, int64_t n) {
  if (n == 0) return;
  cudaStream_t s = ComputeStream();
  if (dt == DType::F32) {
    GeluKernel<<<GeluGrid<float>(n), kThreads, 0, s>>>(static_cast<const float*>(x), static_cast<float*>(y), n);
  } else {
    GeluKernel<<<GeluGrid<bf16>(n), kThreads, 0, s>>>(static_cast<const bf16*>(x), static_cast<bf16*>(y), n);
  }
  CheckLaunch("gelu");
}

void GeluBackward(DType dt, const void* dy, const void* x, void* dx, int64_t n) {
  if (n == 0) return;
  cudaStream_t s = ComputeStream();
  if (dt == DType::F32) {
    GeluBackwardKernel<<<GeluGrid<float>(n), kThreads, 0, s>>>(static_cast<const float*>(dy), static_cast<const float*>(x),
                                                               static_cast<float*>(dx), n);
  } else {
    GeluBackwardKernel<<<GeluGrid<bf16>(n), kThreads, 0, s>>>(static_cast<const bf16*>(dy), static_cast<const bf16*>(x),
                                                              static_cast<bf16*>(dx), n);
  }
  CheckLaunch("geluBackward");
}

}  // namespace tessera::cuda
