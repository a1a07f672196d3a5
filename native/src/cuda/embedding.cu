// Token embedding: a row gather forward (16-byte vectors where D allows), a scatter-add into fp32 backward (atomics: the
// order of the additions into a row, and so its last bits, can differ between runs).
// Floor: forward reads and writes T*D elements; backward reads T*D and writes V*D fp32 (the zero fill).
#include "cuda/kernels.h"
#include "cuda/vec.cuh"

namespace tessera::cuda {
namespace {

// Over vectors of N elements of the output; N divides D, so a vector lies in one row.
template <class T, int N>
__global__ void EmbeddingKernel(const T* w, const int32_t* ids, T* out, int64_t T_, int64_t D, int64_t V, int* bad) {
  using VT = Vec<T, N>;
  const int64_t rowVecs = D / N;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < T_ * rowVecs; k += int64_t(gridDim.x) * blockDim.x) {
    int64_t t = k / rowVecs, d = k - t * rowVecs;
    int32_t id = ids[t];
    if (id < 0 || id >= V) {
      if (bad) *bad = 1;
      continue;
    }
    reinterpret_cast<VT*>(out)[k] = reinterpret_cast<const VT*>(w + id * D)[d];
  }
}

template <class E>
void LaunchEmbedding(const void* w, const int32_t* ids, void* out, int64_t T, int64_t D, int64_t V, int* bad) {
  constexpr int N = kVec<E>;
  auto* wp = static_cast<const E*>(w);
  auto* op = static_cast<E*>(out);
  cudaStream_t s = ComputeStream();
  if (D % N == 0) EmbeddingKernel<E, N><<<GridFor(T * D / N), kThreads, 0, s>>>(wp, ids, op, T, D, V, bad);
  else EmbeddingKernel<E, 1><<<GridFor(T * D), kThreads, 0, s>>>(wp, ids, op, T, D, V, bad);
}

template <class T>
__global__ void EmbeddingBackwardKernel(const T* dy, const int32_t* ids, float* dw, int64_t T_, int64_t D, int64_t V, int* bad) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < T_ * D; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t t = i / D, d = i - t * D;
    int32_t id = ids[t];
    if (id < 0 || id >= V) {
      if (bad) *bad = 1;
      continue;
    }
    atomicAdd(dw + id * D + d, Load(dy, i));
  }
}

}  // namespace

void Embedding(DType dt, const void* w, const int32_t* ids, void* out, int64_t T, int64_t D, int64_t V, int* bad) {
  if (T * D == 0) return;
  if (dt == DType::F32) LaunchEmbedding<float>(w, ids, out, T, D, V, bad);
  else LaunchEmbedding<bf16>(w, ids, out, T, D, V, bad);
  CheckLaunch("embedding");
}

void EmbeddingBackwardAdd(DType dt, const void* dy, const int32_t* ids, float* dw, int64_t T, int64_t D, int64_t V, int* bad) {
  if (T * D == 0) return;
  cudaStream_t s = ComputeStream();
  if (dt == DType::F32) EmbeddingBackwardKernel<<<GridFor(T * D), kThreads, 0, s>>>(static_cast<const float*>(dy), ids, dw, T, D, V, bad);
  else EmbeddingBackwardKernel<<<GridFor(T * D), kThreads, 0, s>>>(static_cast<const bf16*>(dy), ids, dw, T, D, V, bad);
  CheckLaunch("embeddingBackward");
}

void EmbeddingBackward(DType dt, const void* dy, const int32_t* ids, float* dw, int64_t T, int64_t D, int64_t V, int* bad) {
  Check("embeddingBackward", "cudaMemsetAsync", cudaMemsetAsync(dw, 0, V * D * sizeof(float), ComputeStream()));
  EmbeddingBackwardAdd(dt, dy, ids, dw, T, D, V, bad);
}

}  // namespace tessera::cuda
