// 16-byte vector loads and stores for the memory-bound kernels: N elements of T (8 bf16 or 4
// fp32) move as one transaction, converted to and from fp32 in registers. Callers take the
// vector path only where the row length is a multiple of N (and so each row 16-byte aligned,
// the allocator's blocks and viewRows' cuda views being so), and fall back to N = 1 elsewhere.
#pragma once
#include <type_traits>

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

// One st.global.v4 / .v2 by inline PTX: built element by element (or even as a uint4), nvcc
// split some of these stores into 2- or 4-byte ones where it could not prove the address
// 16-byte aligned (rope.cu: 16 st.global.u16 a thread; ncu 73 us and 340 MB of L2 traffic for
// 59 MB moved, 21.9 us once fixed: NOTES.md). Callers guarantee the alignment (see above).
__device__ __forceinline__ void StoreWords(void* p, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"l"(p), "r"(a), "r"(b), "r"(c), "r"(d) : "memory");
}
__device__ __forceinline__ void StoreWords(void* p, uint32_t a, uint32_t b) {
  asm volatile("st.global.v2.b32 [%0], {%1, %2};\n" ::"l"(p), "r"(a), "r"(b) : "memory");
}
__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

template <int N, class T>
__device__ __forceinline__ void StoreVec(T* p, const float (&in)[N]) {
  if constexpr (std::is_same_v<T, bf16> && N == 8) {
    StoreWords(p, PackBf16(in[0], in[1]), PackBf16(in[2], in[3]), PackBf16(in[4], in[5]), PackBf16(in[6], in[7]));
  } else if constexpr (std::is_same_v<T, bf16> && N == 4) {
    StoreWords(p, PackBf16(in[0], in[1]), PackBf16(in[2], in[3]));
  } else if constexpr (std::is_same_v<T, float> && N == 4) {
    StoreWords(p, __float_as_uint(in[0]), __float_as_uint(in[1]), __float_as_uint(in[2]), __float_as_uint(in[3]));
  } else {
    Vec<T, N> v;
#pragma unroll
    for (int i = 0; i < N; ++i) Store(v.v, i, in[i]);
    *reinterpret_cast<Vec<T, N>*>(p) = v;
  }
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
