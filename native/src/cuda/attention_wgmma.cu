// Varlen flash attention on Hopper's warpgroup MMA (wgmma, sm_90a): the same algorithm and
// interface as the mma.sync kernels in attention.cu, which stay beside these as their reference
// and as the path for builds without sm_90a.
//
// Forward: a CTA of 2 warpgroups per (query block of 128 rows, q head, sequence); each warpgroup
// owns 64 query rows and walks key blocks of 128 (double-buffered by cp.async into the 128-byte
// swizzled layout of wgmma.cuh): S = Q K^T with both operands read by the tensor cores from shared memory,
// the online softmax in registers, then O += P V with P from registers (its accumulator layout is
// the A fragment layout) and V by descriptor, transposed. Within a warpgroup the softmax of block
// j runs while P V of block j-1 is in the tensor cores (see WgFwdKernel).
//
// Measured (NOTES, 1.5B shape): forward 157-161 us against 297 on mma.sync and cuDNN's 116;
// backward 549 us against 786 and cuDNN's ~390 (its steps are not yet software-pipelined).
#include "cuda/attention.h"
#include "cuda/attention_common.cuh"
#include "cuda/wgmma.cuh"

namespace tessera::cuda {
namespace {
using namespace attention_detail;

// Two warpgroups a CTA (64 query rows each), key blocks of 128. One warpgroup a CTA (two CTAs
// an SM) measured 469 us against 283 at the 1.5B shape (before the swizzle); three leave 168
// registers a thread and spill.
// At head dim 64, key blocks of 64 bring the kernel to 119 registers and 48 KB of shared memory,
// so two CTAs share an SM: the 0.5B forward measured 101 us against cuDNN's 90 (NOTES, fifth day).
constexpr int kWgFwdGroups = 2;
template <int D>
constexpr int kWgFwdKeys = D == 64 ? 64 : 128;
template <int D>
constexpr int kWgFwdCtasPerSm = D == 64 ? 2 : 1;
template <int D>
constexpr size_t WgFwdSmem() {
  return size_t(64 * kWgFwdGroups + 4 * kWgFwdKeys<D>) * D * sizeof(bf16);
}

// Rows [first, first + valid) of one head into a swizzled ROWS x D tile (wgmma.cuh). Chunk c of a
// round is 16 bytes: chunk c % 8 of row (c / 8) % ROWS in region c / (8 ROWS), so eight threads copy
// one row's 128 contiguous bytes of a region. Rows past valid are zeroed.
template <int D, int ROWS, int THREADS>
__device__ __forceinline__ void LoadSwizzled(bf16* sm, const bf16* g, int64_t rowStride, int64_t first, int valid) {
  constexpr int kRowsPerRound = THREADS / 8, kRounds = ROWS * D / 8 / THREADS;
  static_assert(ROWS % kRowsPerRound == 0, "whole rounds per region");
  const int j = threadIdx.x & 7, r0 = threadIdx.x >> 3;
#pragma unroll
  for (int i = 0; i < kRounds; ++i) {
    const int region = i / (ROWS / kRowsPerRound), r = r0 + (i % (ROWS / kRowsPerRound)) * kRowsPerRound;
    const bool ok = r < valid;
    const bf16* src = g + (first + r) * rowStride + region * 64 + j * 8;
    CpAsync16(sm + region * ROWS * 64 + r * 64 + ((j ^ (r & 7)) << 3), ok ? src : g, ok);
  }
}

// acc (64 x D) += A (registers) B (MN-major descriptor) for one k step of 16: the n of the product
// is the head dim (O += P V; dV += P^T dO and dK += dS^T Q in the backward).
template <int D>
__device__ __forceinline__ void MmaRSn(float* acc, const uint32_t* p, uint64_t v) {
  if constexpr (D == 64) {
    wgmma::MmaRS64<1>(acc, p, v, 1);
  } else {
    wgmma::MmaRS128<1>(acc, p, v, 1);
  }
}

// The loop is software-pipelined within each warpgroup (FA3's intra-warpgroup overlap): block j's
// S = Q K_j^T and block j-1's O += P V_{j-1} are issued together, and block j's softmax runs while
// the second product is still in the tensor cores. K and V therefore have rings of their own: at
// the top of step j the CTA waits for K_j and V_{j-1}, then prefetches K_{j+1} and V_j into the
// slots that S_{j-1} and PV_{j-2} (both waited for in step j-1) have released.
template <int D>
__global__ void __launch_bounds__(128 * kWgFwdGroups, kWgFwdCtasPerSm<D>) WgFwdKernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                         const bf16* __restrict__ v, const int32_t* __restrict__ cu,
                                                         bf16* __restrict__ o, float* __restrict__ lse, int T, int Hq, int Hkv,
                                                         int causal, int window, float scaleLog2) {
  constexpr int BQ = 64 * kWgFwdGroups, BK = kWgFwdKeys<D>, kThreads = 128 * kWgFwdGroups;
  constexpr uint32_t kSlot = (BK * D * sizeof(bf16)) >> 4;  // one ring slot, in descriptor units
  // The grid is (heads, sequences, query blocks) and runs the last query blocks of every head and
  // sequence first: under causal masking they have the most keys, so the tail stays short.
  const int q0 = (gridDim.z - 1 - blockIdx.z) * BQ, h = blockIdx.x, b = blockIdx.y;
  const int start = cu[b], len = cu[b + 1] - start;
  if (q0 >= len) return;
  const int kvh = h / (Hq / Hkv);
  extern __shared__ __align__(1024) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem);
  bf16* Ks = Qs + BQ * D;      // ring of two
  bf16* Vs = Ks + 2 * BK * D;  // ring of two
  const int group = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32, g = lane >> 2, tig = lane & 3;
  const int q1 = min(q0 + BQ, len);
  const int lo = window > 0 ? max(0, q0 - window + 1) : 0;
  const int hi = causal ? q1 : len;
  const int kFirst = (lo / BK) * BK;
  const int nkb = (hi - kFirst + BK - 1) / BK;
  const int64_t qStride = int64_t(Hq) * D, kStride = int64_t(Hkv) * D;
  const bf16* kHead = k + kvh * D;
  const bf16* vHead = v + kvh * D;
  auto loadK = [&](int j) {
    const int kb = kFirst + j * BK;
    LoadSwizzled<D, BK, kThreads>(Ks + (j & 1) * BK * D, kHead, kStride, start + kb, min(BK, len - kb));
  };
  auto loadV = [&](int j) {
    const int kb = kFirst + j * BK;
    LoadSwizzled<D, BK, kThreads>(Vs + (j & 1) * BK * D, vHead, kStride, start + kb, min(BK, len - kb));
  };
  // Everyone's copies landed and are visible to the tensor cores; everyone is past the products that read the slots about to be refilled.
  auto arrive = [] {
    CpAsyncWaitAll();
    wgmma::FenceProxy();
    __syncthreads();
  };

  const int rowG = q0 + group * 64;       // this warpgroup's first row
  const int row0 = rowG + warp * 16 + g;  // this thread's rows: row0 and row0 + 8
  // Q and K are K-major (k steps 32 bytes apart in a region, regions BQ or BK rows of 128 bytes);
  // V is MN-major (k steps of 16 rows, 2048 bytes; LBO the region stride). Units of 16 bytes.
  const uint64_t qDesc = wgmma::Desc(Qs, 16, 1024) + ((group * 64 * 128) >> 4);
  const uint64_t kDesc0 = wgmma::Desc(Ks, 16, 1024), vDesc0 = wgmma::Desc(Vs, BK * 128, 1024);
  auto kStep = [](int ks, int rows) { return uint64_t(((ks >> 2) * rows * 128 + (ks & 3) * 32) >> 4); };
  auto edgeOf = [&](int kb) { return kb + BK > len || (causal && kb + BK - 1 > rowG) || (window > 0 && kb <= rowG + 63 - window); };
  auto issueS = [&](float* s, int j) {
    const uint64_t kd = kDesc0 + (j & 1) * kSlot;
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      if constexpr (BK == 64) wgmma::MmaSS64<0, 0>(s, qDesc + kStep(ks, BQ), kd + kStep(ks, BK), ks > 0);
      else wgmma::MmaSS128<0, 0>(s, qDesc + kStep(ks, BQ), kd + kStep(ks, BK), ks > 0);
    }
    wgmma::Commit();
  };
  auto issuePV = [&](float* acc, const uint32_t (*p)[4], int j) {
    const uint64_t vd = vDesc0 + (j & 1) * kSlot;
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) MmaRSn<D>(acc, p[kk], vd + kk * (2048 >> 4));
    wgmma::Commit();
  };

  LoadSwizzled<D, BQ, kThreads>(Qs, q + h * D, qStride, start + q0, q1 - q0);
  loadK(0);
  CpAsyncCommit();
  arrive();
  if (nkb > 1) loadK(1);
  loadV(0);
  CpAsyncCommit();

  float acc[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) acc[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, corr[2];
  float s[BK / 2];
  uint32_t p[BK / 16][4];

  wgmma::Fence();
  issueS(s, 0);
  wgmma::Wait<0>();
  wgmma::Pin<BK / 2>(s);
  OnlineSoftmax<BK>(s, m, l, corr, edgeOf(kFirst), row0, len, causal, window, kFirst, tig, scaleLog2);
#pragma unroll
  for (int kk = 0; kk < BK / 16; ++kk) AccToA(p[kk], s + 8 * kk, s + 8 * kk + 4);

  for (int j = 1; j < nkb; ++j) {
    const int kb = kFirst + j * BK;
    arrive();  // K_j and V_{j-1} are in
    if (j + 1 < nkb) loadK(j + 1);
    loadV(j);
    CpAsyncCommit();
    wgmma::Fence();
    issueS(s, j);
    issuePV(acc, p, j - 1);
    wgmma::Wait<1>();  // S_j is done; P_{j-1} V_{j-1} may still run
    wgmma::Pin<BK / 2>(s);
    OnlineSoftmax<BK>(s, m, l, corr, edgeOf(kb), row0, len, causal, window, kb, tig, scaleLog2);
    wgmma::Wait<0>();
    wgmma::Pin<D / 2>(acc);
#pragma unroll
    for (int i = 0; i < D / 2; ++i) acc[i] *= corr[(i >> 1) & 1];
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) AccToA(p[kk], s + 8 * kk, s + 8 * kk + 4);
  }
  arrive();  // V of the last block is in
  wgmma::Fence();
  issuePV(acc, p, nkb - 1);
  wgmma::Wait<0>();
  wgmma::Pin<D / 2>(acc);

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float lr = l[r];
    lr += __shfl_xor_sync(0xffffffffu, lr, 1);
    lr += __shfl_xor_sync(0xffffffffu, lr, 2);
    const int i = row0 + r * 8;
    if (i >= len) continue;
    const float inv = lr > 0.f ? 1.f / lr : 0.f;
    bf16* orow = o + (int64_t(start + i) * Hq + h) * D + 2 * tig;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      *reinterpret_cast<__nv_bfloat162*>(orow + dt * 8) = __floats2bfloat162_rn(acc[4 * dt + 2 * r] * inv, acc[4 * dt + 2 * r + 1] * inv);
    }
    if (tig == 0) lse[int64_t(h) * T + start + i] = lr > 0.f ? (m[r] + log2f(lr)) * kLn2 : -INFINITY;
  }
}

template <int D>
void LaunchForward(const AttentionShape& s, const void* q, const void* k, const void* v, const int32_t* cu, void* o, float* lse) {
  static const bool ready = (AllowSmem("attention", WgFwdKernel<D>, WgFwdSmem<D>()), true);
  (void)ready;
  constexpr int kRows = 64 * kWgFwdGroups;
  dim3 grid(unsigned(s.Hq), unsigned(s.batch), unsigned((s.maxLen + kRows - 1) / kRows));
  WgFwdKernel<D><<<grid, 128 * kWgFwdGroups, WgFwdSmem<D>(), ComputeStream()>>>(
      static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v), cu, static_cast<bf16*>(o), lse,
      int(s.T), int(s.Hq), int(s.Hkv), s.causal ? 1 : 0, int(s.window), s.scale * kLog2e);
  CheckLaunch("attention");
}


// Backward: a CTA of 2 warpgroups per (key block of 128, q head, sequence); each warpgroup owns 64
// keys, keeps their dK and dV in registers, and walks the query blocks of 64 that see them
// (Q, dO double-buffered). Per block: S^T = K Q^T and dP^T = V dO^T (both operands from shared
// memory), P = exp(S - lse) and dS = P (dP - rowDot) scale in registers, then dV += P^T dO and
// dK += dS^T Q with P^T and dS^T as register A operands (their accumulator layout), Q and dO read
// transposed. dS^T also goes to shared memory; each warpgroup forms its keys' share of
// dQ = dS K, and the CTA adds the two shares' sum into the fp32 buffer by 16-byte atomics.
// dK, dV are added at the end into the kv head's fp32 sums, as in the mma.sync kernel, staged
// through the dQ area for 16-byte atomics.
constexpr int kWgBwdKeys = 128, kWgBwdQ = 64, kWgBwdThreads = 256;
// dQ partials are staged in fp32 rows of D + 8 floats (the pad keeps the accumulators' float2
// stores free of bank conflicts), one [64, D] tile per warpgroup.
template <int D>
__host__ __device__ constexpr int DqStride() {
  return D + 8;
}
template <int D>
constexpr size_t WgBwdSmem() {
  return size_t(2 * kWgBwdKeys * D + 4 * kWgBwdQ * D + kWgBwdKeys * kWgBwdQ) * sizeof(bf16) +
         (4 * kWgBwdQ + 2 * kWgBwdQ * DqStride<D>()) * sizeof(float);
}

template <int N, int TA, int TB>
__device__ __forceinline__ void MmaSS(float* d, uint64_t a, uint64_t b, int accumulate) {
  if constexpr (N == 64) {
    wgmma::MmaSS64<TA, TB>(d, a, b, accumulate);
  } else {
    wgmma::MmaSS128<TA, TB>(d, a, b, accumulate);
  }
}

// A named barrier for one warpgroup's 128 threads (ids 1 and 2; 0 is __syncthreads).
__device__ __forceinline__ void GroupSync(int group) { asm volatile("bar.sync %0, 128;\n" ::"r"(1 + group) : "memory"); }

template <int D>
__global__ void __launch_bounds__(kWgBwdThreads, 1) WgBwdKernel(const bf16* __restrict__ dout, const bf16* __restrict__ q,
                                                                const bf16* __restrict__ k, const bf16* __restrict__ v,
                                                                const float* __restrict__ lse, const float* __restrict__ rowDot,
                                                                const int32_t* __restrict__ cu, float* __restrict__ dqAcc,
                                                                float* __restrict__ dkAcc, float* __restrict__ dvAcc, int T,
                                                                int Hq, int Hkv, int causal, int window, float scale,
                                                                float scaleLog2) {
  constexpr int BQ = kWgBwdQ, BK = kWgBwdKeys;
  // The grid is (heads, sequences, key blocks): the first key blocks of every head and sequence,
  // which under causal masking see the most queries, run first.
  const int k0 = blockIdx.z * BK, h = blockIdx.x, b = blockIdx.y, kvh = h / (Hq / Hkv);
  const int start = cu[b], len = cu[b + 1] - start;
  if (k0 >= len) return;
  const int k1 = min(k0 + BK, len);
  extern __shared__ __align__(1024) unsigned char smem[];
  bf16* Ks = reinterpret_cast<bf16*>(smem);
  bf16* Vs = Ks + BK * D;
  bf16* Qs = Vs + BK * D;        // two buffers
  bf16* dOs = Qs + 2 * BQ * D;   // two buffers
  bf16* dSs = dOs + 2 * BQ * D;  // dS^T [key][query], swizzled
  float* Ls = reinterpret_cast<float*>(dSs + BK * BQ);  // two buffers
  float* Ds = Ls + 2 * BQ;                              // two buffers
  float* dQs = Ds + 2 * BQ;                             // [2 warpgroups][BQ][DqStride]
  const int group = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32, g = lane >> 2, tig = lane & 3;
  const int64_t qStride = int64_t(Hq) * D, kStride = int64_t(Hkv) * D;

  LoadSwizzled<D, BK, kWgBwdThreads>(Ks, k + kvh * D, kStride, start + k0, k1 - k0);
  LoadSwizzled<D, BK, kWgBwdThreads>(Vs, v + kvh * D, kStride, start + k0, k1 - k0);

  int qLo, qHi;
  QueriesOfKeys(k0, k1, len, causal, window, qLo, qHi);
  const int steps = (qHi - qLo + BQ - 1) / BQ;
  auto issue = [&](int step, int buf) {
    const int q0 = qLo + step * BQ, nq = min(BQ, len - q0);
    LoadSwizzled<D, BQ, kWgBwdThreads>(Qs + buf * BQ * D, q + h * D, qStride, start + q0, nq);
    LoadSwizzled<D, BQ, kWgBwdThreads>(dOs + buf * BQ * D, dout + h * D, qStride, start + q0, nq);
    CpAsyncCommit();
    StageQueryStats<BQ>(Ls + buf * BQ, Ds + buf * BQ, lse, rowDot, int64_t(h) * T + start + q0, nq);
  };
  issue(0, 0);  // joins the K, V group

  // This thread's keys (in the block): keyRow and keyRow + 8; its queries of a block: 8 c + 2 tig + {0, 1}.
  const int keyRow = group * 64 + warp * 16 + g;
  // Descriptor bases (16-byte units; see wgmma.cuh). K-major: this warpgroup's 64 rows of K / V,
  // and Q / dO; MN-major: Q / dO for dK / dV (k = queries), K and dS^T for dQ (k = keys).
  const uint64_t kA = wgmma::Desc(Ks, 16, 1024) + ((group * 64 * 128) >> 4);
  const uint64_t vA = wgmma::Desc(Vs, 16, 1024) + ((group * 64 * 128) >> 4);
  const uint64_t qK = wgmma::Desc(Qs, 16, 1024), doK = wgmma::Desc(dOs, 16, 1024);
  const uint64_t qMN = wgmma::Desc(Qs, BQ * 128, 1024), doMN = wgmma::Desc(dOs, BQ * 128, 1024);
  const uint64_t kMN = wgmma::Desc(Ks, BK * 128, 1024) + ((group * 64 * 128) >> 4);
  const uint64_t dsMN = wgmma::Desc(dSs, BK * 128, 1024) + ((group * 64 * 128) >> 4);
  auto kStep = [](int ks, int rows) { return uint64_t(((ks >> 2) * rows * 128 + (ks & 3) * 32) >> 4); };
  constexpr uint64_t kBuf = (BQ * D * sizeof(bf16)) >> 4, kRows16 = 2048 >> 4;

  float dK[D / 2], dV[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) dK[i] = dV[i] = 0.f;

  for (int step = 0; step < steps; ++step) {
    const int buf = step & 1;
    const int q0 = qLo + step * BQ;
    CpAsyncWaitAll();
    wgmma::FenceProxy();
    __syncthreads();  // this step's tiles are in; every warpgroup is done with the other buffers
    if (step + 1 < steps) issue(step + 1, buf ^ 1);
    const float* Lb = Ls + buf * BQ;
    const float* Db = Ds + buf * BQ;

    float st[BQ / 2], dp[BQ / 2];
    wgmma::Fence();
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) wgmma::MmaSS64<0, 0>(st, kA + kStep(ks, BK), qK + buf * kBuf + kStep(ks, BQ), ks > 0);
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) wgmma::MmaSS64<0, 0>(dp, vA + kStep(ks, BK), doK + buf * kBuf + kStep(ks, BQ), ks > 0);
    wgmma::Commit();
    wgmma::Wait<0>();
    wgmma::Pin<BQ / 2>(st);
    wgmma::Pin<BQ / 2>(dp);

    const bool edge = q0 + BQ > len || k0 + BK > len || (causal && q0 < k0 + BK - 1) || (window > 0 && q0 + BQ - 1 - k0 >= window);
    if (edge) {
      // Two compares a score against the queries [a, b) that see its key (relative to q0 + 2 tig).
#pragma unroll
      for (int hk = 0; hk < 2; ++hk) {
        int a, bq;
        VisibleQueries(k0 + keyRow + 8 * hk, len, causal, window, a, bq);
        a -= q0 + 2 * tig;
        bq -= q0 + 2 * tig;
#pragma unroll
        for (int i = 2 * hk; i < BQ / 2; i += 4) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int rel = 8 * (i >> 2) + e;
            if (rel < a || rel >= bq) st[i + e] = -INFINITY;
          }
        }
      }
    }
    uint32_t pa[BQ / 16][4], da[BQ / 16][4];
#pragma unroll
    for (int i = 0; i < BQ / 2; ++i) {
      const int col = 8 * (i >> 2) + 2 * tig + (i & 1);
      const float p = Exp2(fmaf(st[i], scaleLog2, -Lb[col]));  // masked scores are -inf: p = 0
      st[i] = p;
      dp[i] = p * (dp[i] - Db[col]) * scale;
    }
#pragma unroll
    for (int kk = 0; kk < BQ / 16; ++kk) {
      AccToA(pa[kk], st + 8 * kk, st + 8 * kk + 4);
      AccToA(da[kk], dp + 8 * kk, dp + 8 * kk + 4);
    }
    // dS^T to shared memory for dQ: row keyRow (+8), columns 8 c + 2 tig.
#pragma unroll
    for (int c = 0; c < BQ / 8; ++c) {
#pragma unroll
      for (int hk = 0; hk < 2; ++hk) {
        *reinterpret_cast<uint32_t*>(dSs + wgmma::Swizzled<BK>(keyRow + 8 * hk, 8 * c + 2 * tig)) =
            Pack(dp[4 * c + 2 * hk], dp[4 * c + 2 * hk + 1]);
      }
    }
    wgmma::FenceProxy();
    wgmma::Fence();
#pragma unroll
    for (int kk = 0; kk < BQ / 16; ++kk) MmaRSn<D>(dV, pa[kk], doMN + buf * kBuf + kk * kRows16);
#pragma unroll
    for (int kk = 0; kk < BQ / 16; ++kk) MmaRSn<D>(dK, da[kk], qMN + buf * kBuf + kk * kRows16);
    wgmma::Commit();
    GroupSync(group);  // the warpgroup's dS^T rows are all in shared memory

    // dQ (64 queries x D) += dS[:, this warpgroup's keys] K[its keys].
    float dq[D / 2];
    wgmma::Fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) MmaSS<D, 1, 1>(dq, dsMN + kk * kRows16, kMN + kk * kRows16, kk > 0);
    wgmma::Commit();
    wgmma::Wait<0>();
    wgmma::Pin<D / 2>(dK);
    wgmma::Pin<D / 2>(dV);
    wgmma::Pin<D / 2>(dq);
    float* mine = dQs + group * BQ * DqStride<D>();
    // The two warpgroups' partials meet in shared memory, and one 16-byte atomic adds each 4
    // floats of their sum: a quarter of the atomic instructions and half the atomic traffic of
    // each warpgroup adding its own (per-row bulk reductions by the TMA unit, one a warpgroup,
    // measured slower: 1.5B 420 -> 511 us, 0.5B 296 -> 461).
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
#pragma unroll
      for (int c = 0; c < D / 8; ++c) {
        *reinterpret_cast<float2*>(mine + (warp * 16 + g + 8 * hr) * DqStride<D>() + 8 * c + 2 * tig) =
            make_float2(dq[4 * c + 2 * hr], dq[4 * c + 2 * hr + 1]);
      }
    }
    __syncthreads();
#pragma unroll
    for (int i = threadIdx.x; i < BQ * D / 4; i += kWgBwdThreads) {
      const int r = i / (D / 4), c4 = (i % (D / 4)) * 4;
      if (q0 + r >= len) continue;
      const float4 a = *reinterpret_cast<const float4*>(dQs + r * DqStride<D>() + c4);
      const float4 b2 = *reinterpret_cast<const float4*>(dQs + (BQ + r) * DqStride<D>() + c4);
      atomicAdd(reinterpret_cast<float4*>(dqAcc + (int64_t(start + q0 + r) * Hq + h) * D + c4),
                make_float4(a.x + b2.x, a.y + b2.y, a.z + b2.z, a.w + b2.w));
    }
  }

  // dK and dV (this q head's share) into the kv head's fp32 sums, which gather the group's q
  // heads: staged through shared memory (the dQ area holds 2 x 64 = BK rows) so that one 16-byte
  // atomic adds 4 floats of a key row.
  static_assert(2 * BQ == BK, "the dQ area must hold a key block's rows");
  auto addKeys = [&](const float* acc, float* out) {
    __syncthreads();  // everyone is done reading the area
#pragma unroll
    for (int hk = 0; hk < 2; ++hk) {
#pragma unroll
      for (int c = 0; c < D / 8; ++c) {
        *reinterpret_cast<float2*>(dQs + (keyRow + 8 * hk) * DqStride<D>() + 8 * c + 2 * tig) =
            make_float2(acc[4 * c + 2 * hk], acc[4 * c + 2 * hk + 1]);
      }
    }
    __syncthreads();
#pragma unroll 4
    for (int i = threadIdx.x; i < BK * D / 4; i += kWgBwdThreads) {
      const int r = i / (D / 4), c4 = (i % (D / 4)) * 4;
      if (k0 + r >= len) continue;
      atomicAdd(reinterpret_cast<float4*>(out + (int64_t(start + k0 + r) * Hkv + kvh) * D + c4),
                *reinterpret_cast<const float4*>(dQs + r * DqStride<D>() + c4));
    }
  };
  addKeys(dK, dkAcc);
  addKeys(dV, dvAcc);
}

template <int D>
void LaunchBackward(const AttentionShape& s, const void* dout, const void* q, const void* k, const void* v, const float* lse,
                    const int32_t* cu, float* dqAcc, float* dkAcc, float* dvAcc, const float* rowDot) {
  static const bool ready = (AllowSmem("attentionBackward", WgBwdKernel<D>, WgBwdSmem<D>()), true);
  (void)ready;
  dim3 grid(unsigned(s.Hq), unsigned(s.batch), unsigned((s.maxLen + kWgBwdKeys - 1) / kWgBwdKeys));
  WgBwdKernel<D><<<grid, kWgBwdThreads, WgBwdSmem<D>(), ComputeStream()>>>(
      static_cast<const bf16*>(dout), static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v), lse,
      rowDot, cu, dqAcc, dkAcc, dvAcc, int(s.T), int(s.Hq), int(s.Hkv), s.causal ? 1 : 0, int(s.window), s.scale,
      s.scale * kLog2e);
  CheckLaunch("attentionBackward");
}

}  // namespace

bool AttentionWgmmaGridFits(const AttentionShape& s) {
  constexpr int64_t kBlock = 64 * kWgFwdGroups < kWgBwdKeys ? 64 * kWgFwdGroups : kWgBwdKeys;
  return (s.maxLen + kBlock - 1) / kBlock <= 65535;
}

void AttentionForwardWgmma(const AttentionShape& s, const void* q, const void* k, const void* v, const int32_t* cu, void* o,
                           float* lse) {
  if (s.Dh == 64) {
    LaunchForward<64>(s, q, k, v, cu, o, lse);
  } else {
    LaunchForward<128>(s, q, k, v, cu, o, lse);
  }
}

void AttentionBackwardWgmma(const AttentionShape& s, const void* dout, const void* q, const void* k, const void* v,
                            const float* lse, const int32_t* cu, float* dqAcc, float* dkAcc, float* dvAcc,
                            const float* rowDot) {
  if (s.Dh == 64) {
    LaunchBackward<64>(s, dout, q, k, v, lse, cu, dqAcc, dkAcc, dvAcc, rowDot);
  } else {
    LaunchBackward<128>(s, dout, q, k, v, lse, cu, dqAcc, dkAcc, dvAcc, rowDot);
  }
}

}  // namespace tessera::cuda
