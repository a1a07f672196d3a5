// The kernels' launchers, one family per .cu file (forward beside backward). Pointers are
// device pointers; `Dt` is the storage dtype of the float tensors (F32 or BF16): kernels load
// and store that and compute in fp32. Each launcher queues on the compute stream and checks the
// launch (CheckLaunch names the op); none waits for the device.
#pragma once
#include <cstdint>
#include <vector>

#include "core/column_parts.h"
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

/**
 * Between one [rows, W] buffer and up to kMaxColumnParts parts [rows, w_i] side by side in it (widths in bytes, sum W):
 * split copies one's columns out to the parts, else the parts are copied in.
 */
void CopyColumns(void* one, const std::vector<void*>& parts, const std::vector<int64_t>& widthBytes, int64_t elemBytes, int64_t rows, bool split,
                 const char* op);

// embedding.cu
/**
 * out[t,:] = w[ids[t],:]; an id outside [0,V) is skipped and sets *bad to 1 (checked by the caller),
 * unless bad is null (ids checked on the host). The same for the backwards.
 */
void Embedding(DType dt, const void* w, const int32_t* ids, void* out, int64_t T, int64_t D, int64_t V, int* bad);
/** dw[V,D] (fp32, zeroed here) += dy[t,:] at ids[t]. */
void EmbeddingBackward(DType dt, const void* dy, const int32_t* ids, float* dw, int64_t T, int64_t D, int64_t V, int* bad);
/** dw[V,D] (fp32) += dy[t,:] at ids[t], into an existing gradient (a tied head's): no zero fill. */
void EmbeddingBackwardAdd(DType dt, const void* dy, const int32_t* ids, float* dw, int64_t T, int64_t D, int64_t V, int* bad);

// rmsnorm.cu
/** y = x * rstd * w per row of D; rstd (fp32) = 1/sqrt(mean(x^2) + eps). */
void Rmsnorm(DType dt, const void* x, const void* w, void* y, float* rstd, int64_t rows, int64_t D, float eps);
/** sum = x + residual, then Rmsnorm of sum into y and rstd (all of dt but rstd). */
void RmsnormResidual(DType dt, const void* x, const void* residual, const void* w, void* sum, void* y, float* rstd, int64_t rows,
                     int64_t D, float eps);
/**
 * dx per row (plus `dres` where it is not null: the residual's gradient, added in the same pass);
 * dw (fp32) = sum over rows of dy * x * rstd. `partial` holds RmsnormPartialRows(rows) x D doubles.
 */
void RmsnormBackward(DType dt, const void* dy, const void* x, const void* w, const float* rstd, const void* dres, void* dx,
                     float* dw, double* partial, int64_t rows, int64_t D);
int64_t RmsnormPartialRows(int64_t rows);

// layernorm.cu
/** y = (x - mean) * rstd * w + b per row of D (x, w, b, y of dt); mean and rstd = 1/sqrt(var + eps) fp32. */
void Layernorm(DType dt, const void* x, const void* w, const void* b, void* y, float* mean, float* rstd, int64_t rows, int64_t D,
               float eps);
/** dx per row; dw = sum over rows of dy * xhat, db = sum of dy (fp32). `partial` holds 2 x LayernormPartialRows(rows) x D doubles. */
void LayernormBackward(DType dt, const void* dy, const void* x, const void* w, const float* mean, const float* rstd, void* dx,
                       float* dw, float* db, double* partial, int64_t rows, int64_t D);
int64_t LayernormPartialRows(int64_t rows);

// gelu.cu (tanh approximation)
void Gelu(DType dt, const void* x, void* y, int64_t n);
/** dx = dy * gelu'(x). */
void GeluBackward(DType dt, const void* dy, const void* x, void* dx, int64_t n);

// swiglu.cu
/** h, dh: [rows, width]; gate, up (dgate, dup): rows ld apart (ld = width, or 2 width with up = gate + width: packed halves). */
struct SwigluRows {
  int64_t rows, width, ld;
};
void Swiglu(DType dt, const SwigluRows& r, const void* gate, const void* up, void* h, const char* op);
void SwigluBackward(DType dt, const SwigluRows& r, const void* dh, const void* gate, const void* up, void* dgate, void* dup, const char* op);

// rope.cu
constexpr int kMaxRopeHalf = 256;
/** x[T,H,Dh] rotated by positions[T]; invFreq (host memory, passed as a kernel argument) holds Dh/2 entries (at most kMaxRopeHalf); inverse rotates back. */
void Rope(DType dt, const void* x, const int32_t* positions, const float* invFreq, float attnScale, bool inverse,
          void* y, int64_t T, int64_t H, int64_t Dh);
/** table[T, 2, half] (fp32): cos, then sin, of positions[t] * invFreq[i] (host, half <= kMaxRopeHalf), times attnScale. */
void RopeTable(const int32_t* positions, const float* invFreq, double attnScale, float* table, int64_t T, int64_t half);
/**
 * Rope with cos / sin read from a RopeTable of Dh/2 frequencies, over up to three groups of heads
 * in one launch: group g has heads[g] heads of Dh; token t's are read at x[g] + t * xRow[g] and
 * written at y[g] + t * yRow[g] (elements). Groups 0 and 1 (q, k) are rotated, group 2 (v) is
 * moved as it is: rows of separate [T, H, Dh] tensors, or column ranges of one fused projection.
 */
struct RopeGroups {
  const void* x[3];
  void* y[3];
  int64_t xRow[3], yRow[3], heads[3];
};
void RopeGroupsWithTable(DType dt, const RopeGroups& groups, const float* table, bool inverse, int64_t T, int64_t Dh, const char* op);
/**
 * ropeQKVBackwardCat: x[0..2] (dq [T, heads[0], Dh], dk and dv [T, heads[1] = heads[2], Dh], of xDt)
 * into y [T, (heads[0] + heads[1] + heads[2]) Dh] of yDt (BF16 from BF16; BF16 or F32 from F32),
 * dq and dk rotated back through the table, dv moved. With sums (fp32 [width]): the column sums of
 * y as stored, fp64 in a fixed order through `partial` (RopeQKVBackwardCatPartials(T) x width doubles).
 */
struct RopeCat {
  const void* x[3];
  int64_t heads[3];
  void* y;
};
void RopeQKVBackwardCat(DType xDt, DType yDt, const RopeCat& a, const float* table, float* sums, double* partial, int64_t T,
                        int64_t Dh);
int64_t RopeQKVBackwardCatPartials(int64_t T);

// adamw.cu
/** torch.optim.AdamW on fp32 p, m, v; g is F32 or BF16; when copy is not null it receives bf16(p). */
void AdamW(float* p, DType gDt, const void* g, float* m, float* v, void* copy, int64_t n, float b1, float b2,
           float eps, float decay, float stepSize, float invSqrtBc2);

/** One tensor of a multi-tensor AdamW: fp32 p, g, m, v; copy (bf16) may be null; the per-tensor scalars as AdamW's. */
struct AdamWItem {
  float* p;
  const float* g;
  float* m;
  float* v;
  void* copy;  // bf16
  int64_t n;
  float decay, stepSize, invSqrtBc2;
  int64_t blockStart;  // set by AdamWMany
};
constexpr int kAdamWItems = 384;  // a launch's items: a 1.5B-7B model's ~340 tensors in one kernel parameter (under 32 KB)
/** AdamW over many tensors in few launches; every gradient is multiplied by gradScale first (global-norm clipping). */
void AdamWMany(AdamWItem* items, int count, float b1, float b2, float eps, float gradScale);

// muon.cu
/**
 * Keller Jordan's quintic Newton-Schulz of g[M,N] (gDt F32 or BF16) into out (outDt), in bf16
 * with fp32 accumulation; `reference` takes the tiled GEMM over cuBLASLt (for tests).
 */
void NewtonSchulz(DType gDt, const void* g, DType outDt, void* out, int64_t M, int64_t N, int steps, bool reference);
/**
 * Muon (Moonlight's form) on fp32 p, g, buf [M,N]: buf = mu*buf + g; u = NS(nesterov ? g + mu*buf : buf);
 * p = p*decay - stepSize*u; copy (bf16, may be null) receives bf16(p) in the same pass.
 */
void MuonStep(float* p, const float* g, float* buf, void* copy, int64_t M, int64_t N, float mu, bool nesterov, float decay,
              float stepSize, int steps);

// sumsq.cu
struct SumSquaresInput {
  DType dt;  // F32 or BF16
  const void* x;
  int64_t n;
};
/** *out = sum of x^2 over every input (fp64), in a fixed order. `partial` holds SumSquaresPartials(in, count) doubles. */
void SumSquaresMany(const SumSquaresInput* in, int count, double* partial, double* out);
int64_t SumSquaresPartials(const SumSquaresInput* in, int count);

// matmul.cu
/**
 * Row strides (in elements) of the GEMMs' stored row-major matrices, for operands that are
 * column blocks of wider rows (the fused loss's logits chunk); 0 is the packed stride (a: K, or
 * M when ta; b: N, or K when tb; c: N). A batch's matrices lie stride * stored rows apart.
 */
struct GemmLd {
  int64_t a = 0, b = 0, c = 0;
  /** The strides with each 0 replaced by the packed one. */
  GemmLd For(int64_t M, int64_t N, int64_t K, bool ta, bool tb) const {
    return {a ? a : (ta ? M : K), b ? b : (tb ? K : N), c ? c : N};
  }
};
/**
 * The reference GEMM: c[b] (cDt: F32, or dt) = op(a[b]) op(b[b]) + beta * c[b] + bias for b < batch,
 * op(a) [M,K], op(b) [K,N] (stored transposed when ta / tb), fp32 accumulation; beta 0 or 1 (c
 * is not read when 0), bias[N] of dt added to every row (null: none).
 */
void MatmulInto(DType dt, const void* a, const void* b, DType cDt, void* c, float beta, const void* bias, int64_t batch,
                int64_t M, int64_t N, int64_t K, bool ta, bool tb, const GemmLd& ld = {});

#ifdef TESSERA_CUBLASLT
// matmul_lt.cc
/**
 * MatmulInto's contract through cuBLASLt (bias as its BIAS epilogue, cDt == dt only); false (nothing
 * queued) when it has no algorithm for the case, or an extent is 0.
 */
bool MatmulLtInto(DType dt, const void* a, const void* b, DType cDt, void* c, float beta, const void* bias, int64_t batch,
                  int64_t M, int64_t N, int64_t K, bool ta, bool tb, const GemmLd& ld = {});
/** d = alpha op(a) op(b) + beta c, c and d of cDt in one layout (c may be d; not read when beta is 0); false as MatmulLtInto. */
bool MatmulLtAxpby(DType dt, const void* a, const void* b, DType cDt, const void* c, void* d, float alpha, float beta, int64_t batch,
                   int64_t M, int64_t N, int64_t K, bool ta, bool tb);
#endif

// gemm.cc
/** MatmulLtInto where built in and it has an algorithm (unless `reference`), else MatmulInto; true when cuBLASLt ran it. */
bool Gemm(DType dt, const void* a, const void* b, DType cDt, void* c, float beta, const void* bias, int64_t batch, int64_t M,
          int64_t N, int64_t K, bool ta, bool tb, bool reference, const GemmLd& ld = {});

// bias.cu
/** y[r,:] = x[r,:] + b for rows of N (x, b, y of dt). */
void AddBias(DType dt, const void* x, const void* b, void* y, int64_t rows, int64_t N);
/** out[N] (fp32) = sum over rows of dy[r,:], fp64 in a fixed order. `partial` holds SumRowsPartials(rows) x N doubles. */
void SumRows(DType dt, const void* dy, float* out, double* partial, int64_t rows, int64_t N);
int64_t SumRowsPartials(int64_t rows);

// cross_entropy.cu
/**
 * Per row of logits[C,V] (dt, rows ld >= V apart, ld a multiple of 16 bytes): loss[r] (fp64) = logsumexp - logit[label]; with
 * wantGrad the row becomes (softmax - onehot) * gradScale in place, and columns [V, ld) become 0
 * (rows whose label is ignoreIndex: loss 0, gradient zeros, counted[r] 0). A label outside [0,V)
 * that is not ignoreIndex sets *bad.
 */
void CrossEntropyRows(DType dt, void* logits, const int32_t* labels, double* loss, int* counted, int64_t C, int64_t V, int64_t ld,
                      int64_t ignoreIndex, float gradScale, bool wantGrad, int* bad);
/** out[0] = sum of loss[0..T), out[1] = sum of counted[0..T), in a fixed order (one block). */
void CrossEntropyTotals(const double* loss, const int* counted, int64_t T, double* out);

/** A launch with an impossible block size, for the tests of the launch check. */
void BadLaunch();

}  // namespace tessera::cuda
