// SwiGLU: h = silu(gate) * up, and its backward, elementwise in fp32; gate and up separate
// tensors or the two halves of each row of one [rows, 2 width] (a fused gate/up projection).
// Floor: forward reads 2n and writes n elements; backward reads 3n and writes 2n.
// 16-byte vectors when every pointer is 16-byte aligned and the row width and stride are
// multiples of the vector (always, for a model's [T, FFN] activations); the scalar loop otherwise.
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

// Where element i of the [rows, width] output h (and dh) lies in gate and up (and dgate, dup):
// rows ld apart. ld == width for separate tensors; 2 width for a packed [rows, 2 width] gate|up.
__device__ __forceinline__ int64_t Packed(int64_t i, int64_t width, int64_t ld) {
  if (ld == width) return i;
  const int64_t r = i / width;
  return r * ld + (i - r * width);
}

template <class T>
__global__ void SwigluKernel(const T* gate, const T* up, T* h, int64_t n, int64_t width, int64_t ld) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = Packed(i, width, ld);
    Store(h, i, SwigluOf(Load(gate, j), Load(up, j)));
  }
}

template <class T>
__global__ void SwigluBackwardKernel(const T* dh, const T* gate, const T* up, T* dgate, T* dup, int64_t n, int64_t width, int64_t ld) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = Packed(i, width, ld);
    float dg, du;
    SwigluGrad(Load(dh, i), Load(gate, j), Load(up, j), dg, du);
    Store(dup, j, du);
    Store(dgate, j, dg);
  }
}

template <class T>
__global__ void SwigluVecKernel(const T* gate, const T* up, T* h, int64_t nv, int64_t width, int64_t ld) {
  constexpr int N = kVec<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < nv; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = Packed(i * N, width, ld);
    float g[N], u[N], o[N];
    LoadVec<N>(gate + j, g);
    LoadVec<N>(up + j, u);
#pragma unroll
    for (int e = 0; e < N; ++e) o[e] = SwigluOf(g[e], u[e]);
    StoreVec<N>(h + i * N, o);
  }
}

template <class T>
__global__ void SwigluBackwardVecKernel(const T* dh, const T* gate, const T* up, T* dgate, T* dup, int64_t nv, int64_t width, int64_t ld) {
  constexpr int N = kVec<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < nv; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = Packed(i * N, width, ld);
    float g[N], u[N], d[N], dg[N], du[N];
    LoadVec<N>(gate + j, g);
    LoadVec<N>(up + j, u);
    LoadVec<N>(dh + i * N, d);
#pragma unroll
    for (int e = 0; e < N; ++e) SwigluGrad(d[e], g[e], u[e], dg[e], du[e]);
    StoreVec<N>(dup + j, du);
    StoreVec<N>(dgate + j, dg);
  }
}

bool Aligned16(std::initializer_list<const void*> ps) {
  for (const void* p : ps) if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

template <class T>
void LaunchSwiglu(const SwigluRows& r, const void* gate, const void* up, void* h, cudaStream_t s) {
  auto g = static_cast<const T*>(gate);
  auto u = static_cast<const T*>(up);
  auto o = static_cast<T*>(h);
  constexpr int N = kVec<T>;
  const int64_t n = r.rows * r.width;
  if (r.width % N == 0 && r.ld % N == 0 && Aligned16({gate, up, h})) SwigluVecKernel<<<GridFor(n / N), kThreads, 0, s>>>(g, u, o, n / N, r.width, r.ld);
  else SwigluKernel<<<GridFor(n), kThreads, 0, s>>>(g, u, o, n, r.width, r.ld);
}

template <class T>
void LaunchSwigluBackward(const SwigluRows& r, const void* dh, const void* gate, const void* up, void* dgate, void* dup, cudaStream_t s) {
  auto d = static_cast<const T*>(dh);
  auto g = static_cast<const T*>(gate);
  auto u = static_cast<const T*>(up);
  auto dg = static_cast<T*>(dgate);
  auto du = static_cast<T*>(dup);
  constexpr int N = kVec<T>;
  const int64_t n = r.rows * r.width;
  if (r.width % N == 0 && r.ld % N == 0 && Aligned16({dh, gate, up, dgate, dup})) {
    SwigluBackwardVecKernel<<<GridFor(n / N), kThreads, 0, s>>>(d, g, u, dg, du, n / N, r.width, r.ld);
  } else {
    SwigluBackwardKernel<<<GridFor(n), kThreads, 0, s>>>(d, g, u, dg, du, n, r.width, r.ld);
  }
}

}  // namespace

void Swiglu(DType dt, const SwigluRows& r, const void* gate, const void* up, void* h, const char* op) {
  if (r.rows * r.width == 0) return;
  cudaStream_t s = ComputeStream();
  if (dt == DType::F32) LaunchSwiglu<float>(r, gate, up, h, s);
  else LaunchSwiglu<bf16>(r, gate, up, h, s);
  CheckLaunch(op);
}

void SwigluBackward(DType dt, const SwigluRows& r, const void* dh, const void* gate, const void* up, void* dgate, void* dup,
                    const char* op) {
  if (r.rows * r.width == 0) return;
  cudaStream_t s = ComputeStream();
  if (dt == DType::F32) LaunchSwigluBackward<float>(r, dh, gate, up, dgate, dup, s);
  else LaunchSwigluBackward<bf16>(r, dh, gate, up, dgate, dup, s);
  CheckLaunch(op);
}

}  // namespace tessera::cuda
