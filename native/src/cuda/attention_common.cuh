// Device helpers both attention kernel families share (attention.cu: mma.sync; attention_wgmma.cu:
// Hopper's wgmma): async copies, the bf16 packing of softmax probabilities, the visibility rule.
#pragma once
#include "cuda/common.cuh"

namespace tessera::cuda::attention_detail {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ uint32_t SmemAddr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

// 16 bytes global -> shared; when !valid the destination is zero-filled (rows past a sequence).
__device__ __forceinline__ void CpAsync16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SmemAddr(dst)), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void CpAsyncWaitAll() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

__device__ __forceinline__ uint32_t Pack(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// 2^x by the SFU alone (exp2f adds a rescale for denormal results, which flush to zero here anyway).
__device__ __forceinline__ float Exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Accumulator tiles (16 x 8, fp32) n and n+1 as the A operand (16 x 16, bf16) of the next mma.
__device__ __forceinline__ void AccToA(uint32_t* a, const float* t0, const float* t1) {
  a[0] = Pack(t0[0], t0[1]);
  a[1] = Pack(t0[2], t0[3]);
  a[2] = Pack(t1[0], t1[1]);
  a[3] = Pack(t1[2], t1[3]);
}

// The queries [lo, hi) that see key j (hi <= lo: none): the backward's mask, as VisibleKeys is the forward's.
__device__ __forceinline__ void VisibleQueries(int j, int len, int causal, int window, int& lo, int& hi) {
  lo = causal ? j : 0;
  hi = j >= len ? 0 : window > 0 ? min(len, j + window) : len;
}

// The query rows a backward CTA of keys [k0, k1) visits: [qLo, qHi). k0 is a multiple of the
// key block, so of the query block: the query blocks stay aligned.
__device__ __forceinline__ void QueriesOfKeys(int k0, int k1, int len, int causal, int window, int& qLo, int& qHi) {
  qLo = causal ? k0 : 0;
  qHi = window > 0 ? min(len, k1 - 1 + window) : len;
}

// A backward step's per-query statistics into shared memory: lse in the log2 domain and rowDot,
// zero past the sequence (threads [0, BQ) of the CTA).
template <int BQ>
__device__ __forceinline__ void StageQueryStats(float* Lb, float* Db, const float* lse, const float* rowDot, int64_t first,
                                                int nq) {
  if (threadIdx.x < BQ) {
    const int i = threadIdx.x;
    Lb[i] = i < nq ? lse[first + i] * kLog2e : 0.f;
    Db[i] = i < nq ? rowDot[first + i] : 0.f;
  }
}

// The keys [lo, hi) that row i sees (hi <= lo: none).
__device__ __forceinline__ void VisibleKeys(int i, int len, int causal, int window, int& lo, int& hi) {
  lo = window > 0 ? i - window + 1 : 0;
  hi = i >= len ? 0 : causal ? i + 1 : len;
}

// One key block's raw scores (s: BK/2 accumulators of a 16-row tile of this thread, in the
// mma.sync / wgmma accumulator layout: row row0 + 8 ((i / 2) % 2), key kb + 8 (i / 4) + 2 tig + i % 2) become probabilities in place; m (in the log2 domain), l move
// on, and corr is the factor per row that the output accumulators must be scaled by. Masking runs
// only on edge blocks, as two compares per score against the row's visible range; the scale is
// folded into the exponent's FFMA, so it must be positive (the binding checks).
template <int BK>
__device__ __forceinline__ void OnlineSoftmax(float* s, float* m, float* l, float* corr, bool edge, int row0, int len, int causal,
                                              int window, int kb, int tig, float scaleLog2) {
  if (edge) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      int a, b;
      VisibleKeys(row0 + 8 * r, len, causal, window, a, b);
      a -= kb + 2 * tig;  // key - kb - 2 tig must lie in [a, b)
      b -= kb + 2 * tig;
#pragma unroll
      for (int i = 2 * r; i < BK / 2; i += 4) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int key = 8 * (i >> 2) + e;
          if (key < a || key >= b) s[i + e] = -INFINITY;
        }
      }
    }
  }
  // Row maxima over four independent chains each, then the quad.
  float mx[2][4];
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int c = 0; c < 4; ++c) mx[r][c] = -INFINITY;
#pragma unroll
  for (int i = 0; i < BK / 2; ++i) mx[(i >> 1) & 1][(i >> 2) & 3] = fmaxf(mx[(i >> 1) & 1][(i >> 2) & 3], s[i]);
  float base[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float x = fmaxf(fmaxf(mx[r][0], mx[r][1]), fmaxf(mx[r][2], mx[r][3])) * scaleLog2;
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
    x = fmaxf(x, m[r]);
    base[r] = x == -INFINITY ? 0.f : x;  // a row with nothing visible yet stays at zero
    corr[r] = Exp2(m[r] - base[r]);
    m[r] = x;
  }
  float rs[2][4] = {};
#pragma unroll
  for (int i = 0; i < BK / 2; ++i) {
    s[i] = Exp2(fmaf(s[i], scaleLog2, -base[(i >> 1) & 1]));
    rs[(i >> 1) & 1][(i >> 2) & 3] += s[i];
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) l[r] = l[r] * corr[r] + ((rs[r][0] + rs[r][1]) + (rs[r][2] + rs[r][3]));
}

template <class Kernel>
void AllowSmem(const char* op, Kernel kernel, size_t bytes) {
  Check(op, "cudaFuncSetAttribute", cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

}  // namespace tessera::cuda::attention_detail
