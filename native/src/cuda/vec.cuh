// 16-byte vector loads and stores for the memory-bound kernels: N elements of T (8 bf16 or 4
// fp32) move as one transaction, converted to and from fp32 in registers. Callers take the
// vector path only where the row length is a multiple of N (and so each row 16-byte aligned,
// the allocator's blocks being so), and fall back to N = 1 elsewhere.
#pragma once
#include "cuda/common.cuh"

namespace tessera::cuda {

template <class T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

/** Elements per 16-byte vector of T. */
template <class T>
constexpr int kVec = 16 / sizeof(T);

template <int N, class T>
__device__ __forceinline__ void LoadVec(const T* p, float (&out)[N]) {
  Vec<T, N> v = *reinterpret_cast<const Vec<T, N>*>(p);
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = Load(v.v, i);
}

template <int N, class T>
__device__ __forceinline__ void StoreVec(T* p, const float (&in)[N]) {
  Vec<T, N> v;
#pragma unroll
  for (int i = 0; i < N; ++i) Store(v.v, i, in[i]);
  *reinterpret_cast<Vec<T, N>*>(p) = v;
}

template <int N, class T>
__device__ __forceinline__ void ToFloat(const Vec<T, N>& v, float (&out)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = Load(v.v, i);
}

template <int N, class T>
__device__ __forceinline__ Vec<T, N> FromFloat(const float (&in)[N]) {
  Vec<T, N> v;
#pragma unroll
  for (int i = 0; i < N; ++i) Store(v.v, i, in[i]);
  return v;
}

}  // namespace tessera::cuda
