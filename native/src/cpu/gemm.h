// C = alpha * op(A) op(B) + beta * C, row-major, for float and double.
// op(A) is [M,K]: A[i*lda + k], or A[k*lda + i] when transA. op(B) is [K,N] likewise.
#pragma once
#include <cstdint>

namespace tessera::cpu {

template <class T>
void Gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc);

}  // namespace tessera::cpu
