// SwiGLU: h = silu(gate) * up, and its backward, elementwise in fp32.
// Floor: forward reads 2n and writes n elements; backward reads 3n and writes 2n.
#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace tessera::cuda {
namespace {

template <class T>
__global__ void SwigluKernel(const T* gate, const T* up, T* h, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float g = Load(gate, i);
    float sig = 1.f / (1.f + expf(-g));
    Store(h, i, g * sig * Load(up, i));
  }
}

// d/dg silu(g) = sig * (1 + g * (1 - sig)).
template <class T>
__global__ void SwigluBackwardKernel(const T* dh, const T* gate, const T* up, T* dgate, T* dup, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float g = Load(gate, i), u = Load(up, i), d = Load(dh, i);
    float sig = 1.f / (1.f + expf(-g));
    Store(dup, i, d * g * sig);
    Store(dgate, i, d * u * sig * (1.f + g * (1.f - sig)));
  }
}

}  // namespace

void Swiglu(DType dt, const void* gate, const void* up, void* h, int64_t n) {
  if (n == 0) return;
  cudaStream_t s = ComputeStream();
  if (dt == DType::F32) SwigluKernel<<<GridFor(n), kThreads, 0, s>>>(static_cast<const float*>(gate), static_cast<const float*>(up), static_cast<float*>(h), n);
  else SwigluKernel<<<GridFor(n), kThreads, 0, s>>>(static_cast<const bf16*>(gate), static_cast<const bf16*>(up), static_cast<bf16*>(h), n);
  CheckLaunch("swiglu");
}

void SwigluBackward(DType dt, const void* dh, const void* gate, const void* up, void* dgate, void* dup, int64_t n) {
  if (n == 0) return;
  cudaStream_t s = ComputeStream();
  if (dt == DType::F32) {
    SwigluBackwardKernel<<<GridFor(n), kThreads, 0, s>>>(static_cast<const float*>(dh), static_cast<const float*>(gate), static_cast<const float*>(up),
                                                         static_cast<float*>(dgate), static_cast<float*>(dup), n);
  } else {
    SwigluBackwardKernel<<<GridFor(n), kThreads, 0, s>>>(static_cast<const bf16*>(dh), static_cast<const bf16*>(gate), static_cast<const bf16*>(up),
                                                         static_cast<bf16*>(dgate), static_cast<bf16*>(dup), n);
  }
  CheckLaunch("swigluBackward");
}

}  // namespace tessera::cuda
