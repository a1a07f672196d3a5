// SwiGLU: h = silu(gate) * up, and its backward, elementwise in fp32.
// Floor: forward reads 2n and writes n elements; backward reads 3n and writes 2n.
// 16-byte vectors when every pointer is 16-byte aligned and n a multiple of the vector (always,
// for a model's [T, FFN] activations); the scalar loop otherwise.
#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/kernels.h"
#include "cuda/vec.cuh"

namespace tessera::cuda {
namespace {

__device__ __forceinline__ float Sigmoid(float g) { return 1.f / (1.f + expf(-g)); }

// h = silu(g) * u.
__device__ __forceinline__ float SwigluOf(float g, float u) { return g * Sigmoid(g) * u; }

// d/dg silu(g) = sig * (1 + g * (1 - sig)): dgate and dup of one element.
__device__ __forceinline__ void SwigluGrad(float d, float g, float u, float& dg, float& du) {
  float sig = Sigmoid(g);
  du = d * g * sig;
  dg = d * u * sig * (1.f + g * (1.f - sig));
}

template <class T>
__global__ void SwigluKernel(const T* gate, const T* up, T* h, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    Store(h, i, SwigluOf(Load(gate, i), Load(up, i)));
  }
}

template <class T>
__global__ void SwigluBackwardKernel(const T* dh, const T* gate, const T* up, T* dgate, T* dup, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float dg, du;
    SwigluGrad(Load(dh, i), Load(gate, i), Load(up, i), dg, du);
    Store(dup, i, du);
    Store(dgate, i, dg);
  }
}

template <class T>
__global__ void SwigluVecKernel(const T* gate, const T* up, T* h, int64_t nv) {
  constexpr int N = kVec<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < nv; i += int64_t(gridDim.x) * blockDim.x) {
    float g[N], u[N], o[N];
    LoadVec<N>(gate + i * N, g);
    LoadVec<N>(up + i * N, u);
#pragma unroll
    for (int j = 0; j < N; ++j) o[j] = SwigluOf(g[j], u[j]);
    StoreVec<N>(h + i * N, o);
  }
}

template <class T>
__global__ void SwigluBackwardVecKernel(const T* dh, const T* gate, const T* up, T* dgate, T* dup, int64_t nv) {
  constexpr int N = kVec<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < nv; i += int64_t(gridDim.x) * blockDim.x) {
    float g[N], u[N], d[N], dg[N], du[N];
    LoadVec<N>(gate + i * N, g);
    LoadVec<N>(up + i * N, u);
    LoadVec<N>(dh + i * N, d);
#pragma unroll
    for (int j = 0; j < N; ++j) SwigluGrad(d[j], g[j], u[j], dg[j], du[j]);
    StoreVec<N>(dup + i * N, du);
    StoreVec<N>(dgate + i * N, dg);
  }
}

bool Aligned16(std::initializer_list<const void*> ps) {
  for (const void* p : ps) if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

template <class T>
void LaunchSwiglu(const void* gate, const void* up, void* h, int64_t n, cudaStream_t s) {
  auto g = static_cast<const T*>(gate);
  auto u = static_cast<const T*>(up);
  auto o = static_cast<T*>(h);
  constexpr int N = kVec<T>;
  if (n % N == 0 && Aligned16({gate, up, h})) SwigluVecKernel<<<GridFor(n / N), kThreads, 0, s>>>(g, u, o, n / N);
  else SwigluKernel<<<GridFor(n), kThreads, 0, s>>>(g, u, o, n);
}

template <class T>
void LaunchSwigluBackward(const void* dh, const void* gate, const void* up, void* dgate, void* dup, int64_t n, cudaStream_t s) {
  auto d = static_cast<const T*>(dh);
  auto g = static_cast<const T*>(gate);
  auto u = static_cast<const T*>(up);
  auto dg = static_cast<T*>(dgate);
  auto du = static_cast<T*>(dup);
  constexpr int N = kVec<T>;
  if (n % N == 0 && Aligned16({dh, gate, up, dgate, dup})) SwigluBackwardVecKernel<<<GridFor(n / N), kThreads, 0, s>>>(d, g, u, dg, du, n / N);
  else SwigluBackwardKernel<<<GridFor(n), kThreads, 0, s>>>(d, g, u, dg, du, n);
}

}  // namespace

void Swiglu(DType dt, const void* gate, const void* up, void* h, int64_t n) {
  if (n == 0) return;
  cudaStream_t s = ComputeStream();
  if (dt == DType::F32) LaunchSwiglu<float>(gate, up, h, n, s);
  else LaunchSwiglu<bf16>(gate, up, h, n, s);
  CheckLaunch("swiglu");
}

void SwigluBackward(DType dt, const void* dh, const void* gate, const void* up, void* dgate, void* dup, int64_t n) {
  if (n == 0) return;
  cudaStream_t s = ComputeStream();
  if (dt == DType::F32) LaunchSwigluBackward<float>(dh, gate, up, dgate, dup, n, s);
  else LaunchSwigluBackward<bf16>(dh, gate, up, dgate, dup, n, s);
  CheckLaunch("swigluBackward");
}

}  // namespace tessera::cuda
