// Token embedding: a row gather forward, a scatter-add into fp32 backward (atomics: the
// order of the additions into a row, and so its last bits, can differ between runs).
// Floor: forward reads and writes T*D elements; backward reads T*D and writes V*D fp32 (the zero fill).
#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace tessera::cuda {
namespace {

template <class T>
__global__ void EmbeddingKernel(const T* w, const int32_t* ids, T* out, int64_t T_, int64_t D, int64_t V, int* bad) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < T_ * D; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t t = i / D, d = i - t * D;
    int32_t id = ids[t];
    if (id < 0 || id >= V) {
      *bad = 1;
      continue;
    }
    out[i] = w[id * D + d];
  }
}

template <class T>
__global__ void EmbeddingBackwardKernel(const T* dy, const int32_t* ids, float* dw, int64_t T_, int64_t D, int64_t V, int* bad) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < T_ * D; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t t = i / D, d = i - t * D;
    int32_t id = ids[t];
    if (id < 0 || id >= V) {
      *bad = 1;
      continue;
    }
    atomicAdd(dw + id * D + d, Load(dy, i));
  }
}

}  // namespace

void Embedding(DType dt, const void* w, const int32_t* ids, void* out, int64_t T, int64_t D, int64_t V, int* bad) {
  if (T * D == 0) return;
  cudaStream_t s = ComputeStream();
  if (dt == DType::F32) EmbeddingKernel<<<GridFor(T * D), kThreads, 0, s>>>(static_cast<const float*>(w), ids, static_cast<float*>(out), T, D, V, bad);
  else EmbeddingKernel<<<GridFor(T * D), kThreads, 0, s>>>(static_cast<const bf16*>(w), ids, static_cast<bf16*>(out), T, D, V, bad);
  CheckLaunch("embedding");
}

void EmbeddingBackward(DType dt, const void* dy, const int32_t* ids, float* dw, int64_t T, int64_t D, int64_t V, int* bad) {
  cudaStream_t s = ComputeStream();
  Check("embeddingBackward", "cudaMemsetAsync", cudaMemsetAsync(dw, 0, V * D * sizeof(float), s));
  if (T * D == 0) return;
  if (dt == DType::F32) EmbeddingBackwardKernel<<<GridFor(T * D), kThreads, 0, s>>>(static_cast<const float*>(dy), ids, dw, T, D, V, bad);
  else EmbeddingBackwardKernel<<<GridFor(T * D), kThreads, 0, s>>>(static_cast<const bf16*>(dy), ids, dw, T, D, V, bad);
  CheckLaunch("embeddingBackward");
}

}  // namespace tessera::cuda
