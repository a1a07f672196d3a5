// The kernels' launchers, one family per .cu file (forward beside backward). Pointers are
// device pointers; `Dt` is the storage dtype of the float tensors (F32 or BF16): kernels load
// and store that and compute in fp32. Each launcher queues on the compute stream and checks the
// launch (CheckLaunch names the op); none waits for the device.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace tessera::cuda {

// elementwise.cu
void Add(DType dt, const void* a, const void* b, void* out, int64_t n);
void Mul(DType dt, const void* a, const void* b, void* out, int64_t n);
void Scale(DType dt, const void* a, float s, void* out, int64_t n);
/** dst += alpha * src, dst and src each F32 or BF16. */
void AddInto(DType dstDt, void* dst, DType srcDt, const void* src, float alpha, int64_t n);
/** F32 <-> BF16 (round to nearest even), or a copy when the dtypes agree. */
void Cast(DType from, const void* src, DType to, void* dst, int64_t n);

// embedding.cu
/** out[t,:] = w[ids[t],:]; an id outside [0,V) sets *bad to 1 (checked by the caller). */
void Embedding(DType dt, const void* w, const int32_t* ids, void* out, int64_t T, int64_t D, int64_t V, int* bad);
/** dw[V,D] (fp32, zeroed here) += dy[t,:] at ids[t]. */
void EmbeddingBackward(DType dt, const void* dy, const int32_t* ids, float* dw, int64_t T, int64_t D, int64_t V, int* bad);

// rmsnorm.cu
/** y = x * rstd * w per row of D; rstd (fp32) = 1/sqrt(mean(x^2) + eps). */
void Rmsnorm(DType dt, const void* x, const void* w, void* y, float* rstd, int64_t rows, int64_t D, float eps);
/** dx per row; dw (fp32) = sum over rows of dy * x * rstd. `partial` holds RmsnormPartialRows(rows) x D doubles. */
void RmsnormBackward(DType dt, const void* dy, const void* x, const void* w, const float* rstd, void* dx, float* dw,
                     double* partial, int64_t rows, int64_t D);
int64_t RmsnormPartialRows(int64_t rows);

// swiglu.cu
void Swiglu(DType dt, const void* gate, const void* up, void* h, int64_t n);
void SwigluBackward(DType dt, const void* dh, const void* gate, const void* up, void* dgate, void* dup, int64_t n);

// rope.cu
constexpr int kMaxRopeHalf = 256;
/** x[T,H,Dh] rotated by positions[T]; invFreq (host memory, passed as a kernel argument) holds Dh/2 entries (at most kMaxRopeHalf); inverse rotates back. */
void Rope(DType dt, const void* x, const int32_t* positions, const float* invFreq, float attnScale, bool inverse,
          void* y, int64_t T, int64_t H, int64_t Dh);

// adamw.cu
/** torch.optim.AdamW on fp32 p, m, v; g is F32 or BF16; when copy is not null it receives bf16(p). */
void AdamW(float* p, DType gDt, const void* g, float* m, float* v, void* copy, int64_t n, float b1, float b2,
           float eps, float decay, float stepSize, float invSqrtBc2);

// sumsq.cu
/** *acc += sum of x^2 (fp64), in a fixed order. `partial` holds SumSquaresPartials(n) doubles. */
void SumSquares(DType dt, const void* x, int64_t n, double* partial, double* acc);
int64_t SumSquaresPartials(int64_t n);

// matmul.cu
/** c[b] = op(a[b]) op(b[b]) for b < batch: op(a) [M,K], op(b) [K,N] (stored transposed when ta / tb); fp32 accumulation. */
void Matmul(DType dt, const void* a, const void* b, void* c, int64_t batch, int64_t M, int64_t N, int64_t K, bool ta, bool tb);

#ifdef TESSERA_CUBLASLT
// matmul_lt.cc
/** Matmul's contract through cuBLASLt; false (nothing queued) when it has no algorithm for the case, or an extent is 0. */
bool MatmulLt(DType dt, const void* a, const void* b, void* c, int64_t batch, int64_t M, int64_t N, int64_t K, bool ta, bool tb);
#endif

/** A launch with an impossible block size, for the tests of the launch check. */
void BadLaunch();

}  // namespace tessera::cuda
