// The one entry for C++ callers that need a GEMM on cuda (the matmul bindings, the fused
// cross-entropy): cuBLASLt where the build has it and it has an algorithm for the case, the
// tiled reference GEMM of matmul.cu otherwise.
#include "cuda/kernels.h"

namespace tessera::cuda {

bool Gemm(DType dt, const void* a, const void* b, DType cDt, void* c, float beta, const void* bias, int64_t batch, int64_t M,
          int64_t N, int64_t K, bool ta, bool tb, bool reference, const GemmLd& ld) {
#ifdef TESSERA_CUBLASLT
  if (!reference && MatmulLtInto(dt, a, b, cDt, c, beta, bias, batch, M, N, K, ta, tb, ld)) return true;
#else
  (void)reference;
#endif
  MatmulInto(dt, a, b, cDt, c, beta, bias, batch, M, N, K, ta, tb, ld);
  return false;
}

}  // namespace tessera::cuda
