// Varlen flash attention (FlashAttention-2 style) on tensor cores: mma.sync m16n8k16 bf16 with
// fp32 accumulation, operands fed from shared memory by ldmatrix, tiles loaded by cp.async.
//
// Forward: a CTA of 4 warps per (query block of 128 rows, q head, sequence); each warp owns two
// tiles of 16 query rows and walks key blocks (64 keys at Dh 64, 32 at Dh 128; double-buffered)
// with an online softmax in the log2 domain. Key blocks wholly above the diagonal or left of the
// window are never visited.
//
// Backward: rowDot = rowsum(dout * o) first (the same pass zeroes the fp32 sums below); then a CTA of 8 warps per (key block of 128, q
// head, sequence) keeps dK, dV of its 128 keys in registers (32 keys x half the head dim per
// warp) and walks the query blocks of 64 that see them (double-buffered), recomputing P from the
// saved lse; P and dS pass through shared memory between the warp tilings (see BwdKernel). A CTA per q
// head rather than per kv head keeps the causal critical path at one head's query blocks: its
// dK, dV shares are added by atomics into the kv head's fp32 sums (8 MB each at the 1.5B
// shape, so the adds stay in L2; writing per-q-head partials and summing them in a third kernel
// moved 100 MB more). dQ is summed the same way (each CTA adds dS K for its keys), and a last pass
// casts the three sums to bf16. The atomics make the last bits of dq, dk, dv depend on the order
// CTAs finish in.
//
// Grids are (blocks of the longest sequence, heads, sequences); CTAs past their sequence's end
// exit at once, so no block table is needed.
//
// On Hopper (an sm_90a build) the wgmma kernels of attention_wgmma.cu take over the forward and
// the backward's main kernel (AttentionForward / AttentionBackward dispatch; SetAttentionKernels
// overrides); these stay as their reference and the path for other builds and GPUs.
#include "cuda/attention.h"
#include "cuda/attention_common.cuh"
#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace tessera::cuda {
namespace {
using namespace attention_detail;

__device__ __forceinline__ void AtomicAdd2(float* p, float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2*>(p), make_float2(a, b));
#else
  atomicAdd(p, a);
  atomicAdd(p + 1, b);
#endif
}

__device__ __forceinline__ void Ldmatrix(uint32_t* r, const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(p)));
}
__device__ __forceinline__ void LdmatrixT(uint32_t* r, const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(p)));
}

// c += a (16x16, row) * b (16x8, col).
__device__ __forceinline__ void Mma(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Loads rows [first, first+valid) of one head (g points at the head's first column) into a
// ROWS x D tile with row stride D+8 (the pad keeps ldmatrix free of bank conflicts).
template <int D, int ROWS, int THREADS>
__device__ __forceinline__ void LoadTile(bf16* sm, const bf16* g, int64_t rowStride, int64_t first, int valid) {
  constexpr int kChunks = D / 8;
#pragma unroll
  for (int c = threadIdx.x; c < ROWS * kChunks; c += THREADS) {
    int r = c / kChunks, cc = c % kChunks;
    bool ok = r < valid;
    const bf16* src = ok ? g + (first + r) * rowStride + cc * 8 : g;
    CpAsync16(sm + r * (D + 8) + cc * 8, src, ok);
  }
}

// The forward's tiling: kFwdWarps warps, each owning kFwdTiles tiles of 16 query rows, so that each
// K and V fragment read from shared memory feeds two mma (128 query rows a CTA). Key blocks of 64
// at Dh 64; of 32 at Dh 128, where the output accumulators of two row tiles leave no registers
// for a wider score tile.
constexpr int kFwdWarps = 4, kFwdTiles = 2, kFwdRows = 16 * kFwdWarps * kFwdTiles;
template <int D>
__host__ __device__ constexpr int FwdBK() { return D == 128 ? 32 : 64; }
template <int D>
constexpr size_t FwdSmem() { return size_t(kFwdRows + 4 * FwdBK<D>()) * (D + 8) * sizeof(bf16); }

template <int D>
__global__ void __launch_bounds__(kFwdWarps * 32) FwdKernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                    const bf16* __restrict__ v, const int32_t* __restrict__ cu,
                                                    bf16* __restrict__ o, float* __restrict__ lse, int T, int Hq, int Hkv,
                                                    int causal, int window, float scaleLog2) {
  constexpr int kThreads = kFwdWarps * 32, S = D + 8, BQ = kFwdRows, MT = kFwdTiles, BK = FwdBK<D>();
  // Last blocks first: under causal masking they have the most keys, so the tail stays short.
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BQ, h = blockIdx.y, b = blockIdx.z;
  const int start = cu[b], len = cu[b + 1] - start;
  if (q0 >= len) return;
  const int kvh = h / (Hq / Hkv);
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem);
  bf16* Ks = Qs + BQ * S;      // two buffers
  bf16* Vs = Ks + 2 * BK * S;  // two buffers
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, tig = lane & 3;
  const int q1 = min(q0 + BQ, len);
  const int lo = window > 0 ? max(0, q0 - window + 1) : 0;
  const int hi = causal ? q1 : len;
  const int kFirst = (lo / BK) * BK;
  const int nkb = (hi - kFirst + BK - 1) / BK;
  const int64_t qStride = int64_t(Hq) * D, kStride = int64_t(Hkv) * D;
  const bf16* kHead = k + kvh * D;
  const bf16* vHead = v + kvh * D;

  LoadTile<D, BQ, kThreads>(Qs, q + h * D, qStride, start + q0, q1 - q0);
  LoadTile<D, BK, kThreads>(Ks, kHead, kStride, start + kFirst, min(BK, len - kFirst));
  LoadTile<D, BK, kThreads>(Vs, vHead, kStride, start + kFirst, min(BK, len - kFirst));
  CpAsyncCommit();

  float acc[MT][D / 8][4] = {};
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.f;
  const int rowW = warp * 16 * MT;       // this warp's first row in the block
  const int row0 = q0 + rowW + g;        // this thread's rows: row0 + 16 mt + {0, 8}
  const bf16* Qw = Qs + (rowW + (lane & 15)) * S + (lane >> 4) * 8;

  for (int j = 0; j < nkb; ++j) {
    const int kb = kFirst + j * BK, buf = j & 1;
    CpAsyncWaitAll();
    __syncthreads();  // the tile is visible to all, and every warp is done with the other buffer
    if (j + 1 < nkb) {
      const int nb = kb + BK;
      LoadTile<D, BK, kThreads>(Ks + (buf ^ 1) * BK * S, kHead, kStride, start + nb, min(BK, len - nb));
      LoadTile<D, BK, kThreads>(Vs + (buf ^ 1) * BK * S, vHead, kStride, start + nb, min(BK, len - nb));
      CpAsyncCommit();
    }
    const bf16* Kb = Ks + buf * BK * S;
    const bf16* Vb = Vs + buf * BK * S;

    // Q fragments are re-read from shared memory per block: holding them costs the registers
    // that two row tiles need.
    float s[MT][BK / 8][4] = {};
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
      uint32_t qa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) Ldmatrix(qa[mt], Qw + mt * 16 * S + kc * 16);
#pragma unroll
      for (int np = 0; np < BK / 16; ++np) {
        uint32_t r[4];
        Ldmatrix(r, Kb + (np * 16 + (lane & 7) + (lane >> 4) * 8) * S + kc * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          Mma(s[mt][2 * np], qa[mt], r[0], r[1]);
          Mma(s[mt][2 * np + 1], qa[mt], r[2], r[3]);
        }
      }
    }
    const bool edge = kb + BK > len || (causal && kb + BK - 1 > q0) || (window > 0 && kb <= q0 + BQ - 1 - window);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      float corr[2];
      OnlineSoftmax<BK>(&s[mt][0][0], m[mt], l[mt], corr, edge, row0 + mt * 16, len, causal, window, kb, tig, scaleLog2);
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        acc[mt][dt][0] *= corr[0];
        acc[mt][dt][1] *= corr[0];
        acc[mt][dt][2] *= corr[1];
        acc[mt][dt][3] *= corr[1];
      }
    }
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) AccToA(pa[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t r[4];
        LdmatrixT(r, Vb + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * S + dp * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          Mma(acc[mt][2 * dp], pa[mt], r[0], r[1]);
          Mma(acc[mt][2 * dp + 1], pa[mt], r[2], r[3]);
        }
      }
    }
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float lr = l[mt][r];
      lr += __shfl_xor_sync(0xffffffffu, lr, 1);
      lr += __shfl_xor_sync(0xffffffffu, lr, 2);
      const int i = row0 + mt * 16 + r * 8;
      if (i >= len) continue;
      const float inv = lr > 0.f ? 1.f / lr : 0.f;
      bf16* orow = o + (int64_t(start + i) * Hq + h) * D + 2 * tig;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        *reinterpret_cast<__nv_bfloat162*>(orow + dt * 8) =
            __floats2bfloat162_rn(acc[mt][dt][2 * r] * inv, acc[mt][dt][2 * r + 1] * inv);
      }
      if (tig == 0) lse[int64_t(h) * T + start + i] = lr > 0.f ? (m[mt][r] + log2f(lr)) * kLn2 : -INFINITY;
    }
  }
}

// The backward's first pass, over rows r = t * Hq + h: rowDot[h, t] = dout[r, :] . o[r, :] (fp32),
// and the zeroing of the fp32 sums the main kernel adds into (acc: dq's T*Hq rows, then dk's and
// dv's 2*T*Hkv rows; row r zeroes rows r, r + T*Hq and r + 2*T*Hq of the whole), in one read of
// dout and o.
// D / 8 lanes a row, a 16-byte vector each.
template <int D>
__global__ void RowDotZeroKernel(const bf16* __restrict__ dout, const bf16* __restrict__ o, float* __restrict__ rowDot,
                                 float* __restrict__ acc, int64_t rows, int64_t accRows, int T, int Hq) {
  constexpr int kLanes = D / 8, kRowsPerWarp = 32 / kLanes;
  const int lane = threadIdx.x % 32, sub = lane % kLanes;
  const int64_t r = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32 * kRowsPerWarp + lane / kLanes;
  float s = 0.f;
  if (r < rows) {
    const uint4 a = *reinterpret_cast<const uint4*>(dout + r * D + 8 * sub);
    const uint4 c = *reinterpret_cast<const uint4*>(o + r * D + 8 * sub);
    const auto* a2 = reinterpret_cast<const __nv_bfloat162*>(&a);
    const auto* c2 = reinterpret_cast<const __nv_bfloat162*>(&c);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 x = __bfloat1622float2(a2[i]), y = __bfloat1622float2(c2[i]);
      s = fmaf(x.x, y.x, fmaf(x.y, y.y, s));
    }
    const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int m = 0; m < 3; ++m) {  // acc has at most 3 * rows rows (Hkv <= Hq)
      const int64_t z = r + m * rows;
      if (z < accRows) {
        reinterpret_cast<float4*>(acc + z * D + 8 * sub)[0] = zero;
        reinterpret_cast<float4*>(acc + z * D + 8 * sub)[1] = zero;
      }
    }
  }
#pragma unroll
  for (int off = kLanes / 2; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (r < rows && sub == 0) rowDot[(r % Hq) * T + r / Hq] = s;
}

// The backward's last pass: the fp32 sums (dq's, then dk's and dv's, contiguous in acc) to the
// three bf16 outputs, four floats a thread.
__global__ void CastSumsKernel(const float* __restrict__ acc, bf16* __restrict__ dq, bf16* __restrict__ dk,
                               bf16* __restrict__ dv, int64_t nq, int64_t nkv) {
  const int64_t total = (nq + 2 * nkv) / 4;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const float4 x = reinterpret_cast<const float4*>(acc)[i];
    int64_t e = 4 * i;
    bf16* out = dq;
    if (e >= nq + nkv) {
      out = dv;
      e -= nq + nkv;
    } else if (e >= nq) {
      out = dk;
      e -= nq;
    }
    __nv_bfloat162 lo = __floats2bfloat162_rn(x.x, x.y), hi = __floats2bfloat162_rn(x.z, x.w);
    uint2 packed;
    packed.x = *reinterpret_cast<uint32_t*>(&lo);
    packed.y = *reinterpret_cast<uint32_t*>(&hi);
    *reinterpret_cast<uint2*>(out + e) = packed;
  }
}

// The backward's CTA: 8 warps over 128 keys (K and V stay in shared memory) and 64 queries a
// step, in three warp tilings of 32 x 32 or wider so that each fragment read by ldmatrix feeds
// several mma (shared-memory bandwidth, not the tensor cores, bounds a tiling of 16-row warps):
// S^T and dP^T as 4 (keys) x 2 (queries) warps; P and dS go through shared memory to change
// tiling; dV, dK as 4 (keys) x 2 (head-dim halves) warps, which keep them in registers; dQ as
// 2 (queries) x 4 (head-dim quarters) warps.
constexpr int kBwdWarps = 8, kBwdKeys = 128, kBwdQ = 64;
template <int D>
constexpr size_t BwdSmem() {
  return (size_t(2 * kBwdKeys + 4 * kBwdQ) * (D + 8) + size_t(2 * kBwdKeys) * (kBwdQ + 8)) * sizeof(bf16) +
         4 * kBwdQ * sizeof(float);
}

template <int D>
__global__ void __launch_bounds__(kBwdWarps * 32, 1) BwdKernel(const bf16* __restrict__ dout, const bf16* __restrict__ q,
                                                              const bf16* __restrict__ k, const bf16* __restrict__ v,
                                                              const float* __restrict__ lse, const float* __restrict__ rowDot,
                                                              const int32_t* __restrict__ cu, float* __restrict__ dqAcc,
                                                              float* __restrict__ dkAcc, float* __restrict__ dvAcc, int T,
                                                              int Hq, int Hkv, int causal, int window, float scale,
                                                              float scaleLog2) {
  constexpr int BQ = kBwdQ, BK = kBwdKeys, S = D + 8, SP = BQ + 8, kThreads = kBwdWarps * 32;
  constexpr int kHalf = D / 2, kQuarter = D / 4;  // head-dim columns of a warp: dK/dV, dQ
  const int k0 = blockIdx.x * BK, h = blockIdx.y, b = blockIdx.z, kvh = h / (Hq / Hkv);
  const int start = cu[b], len = cu[b + 1] - start;
  if (k0 >= len) return;
  const int k1 = min(k0 + BK, len);
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* Ks = reinterpret_cast<bf16*>(smem);
  bf16* Vs = Ks + BK * S;
  bf16* Qs = Vs + BK * S;        // two buffers
  bf16* dOs = Qs + 2 * BQ * S;   // two buffers
  bf16* Ps = dOs + 2 * BQ * S;   // P^T [key][query]
  bf16* dSs = Ps + BK * SP;      // dS^T [key][query]
  float* Ls = reinterpret_cast<float*>(dSs + BK * SP);  // two buffers
  float* Ds = Ls + 2 * BQ;                              // two buffers
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, tig = lane & 3;
  const int wk = warp % 4;        // keys wk*32.. (S^T, dP^T, dK, dV)
  const int wq = warp / 4;        // queries wq*32.. (S^T, dP^T); head-dim half (dK, dV)
  const int wq4 = warp % 2;       // queries wq4*32.. (dQ)
  const int wc = warp / 2;        // head-dim quarter (dQ)
  const int64_t qStride = int64_t(Hq) * D, kStride = int64_t(Hkv) * D;

  LoadTile<D, BK, kThreads>(Ks, k + kvh * D, kStride, start + k0, k1 - k0);
  LoadTile<D, BK, kThreads>(Vs, v + kvh * D, kStride, start + k0, k1 - k0);

  float dK[2][kHalf / 8][4] = {}, dV[2][kHalf / 8][4] = {};
  int qLo, qHi;
  QueriesOfKeys(k0, k1, len, causal, window, qLo, qHi);

  // Query blocks in order; the next one's tiles load while this one computes.
  const int steps = (qHi - qLo + BQ - 1) / BQ;
  auto issue = [&](int step, int buf) {
    const int q0 = qLo + step * BQ, nq = min(BQ, len - q0);
    LoadTile<D, BQ, kThreads>(Qs + buf * BQ * S, q + h * D, qStride, start + q0, nq);
    LoadTile<D, BQ, kThreads>(dOs + buf * BQ * S, dout + h * D, qStride, start + q0, nq);
    CpAsyncCommit();
    StageQueryStats<BQ>(Ls + buf * BQ, Ds + buf * BQ, lse, rowDot, int64_t(h) * T + start + q0, nq);
  };
  issue(0, 0);  // joins the K, V group

  for (int step = 0; step < steps; ++step) {
    const int buf = step & 1;
    const int q0 = qLo + step * BQ;
    CpAsyncWaitAll();
    __syncthreads();  // this step's tiles are visible; every warp is done with the last step's buffers, Ps and dSs
    if (step + 1 < steps) issue(step + 1, buf ^ 1);
    const bf16* Qb = Qs + buf * BQ * S;
    const bf16* dOb = dOs + buf * BQ * S;
    const float* Lb = Ls + buf * BQ;
    const float* Db = Ds + buf * BQ;

    {
      // S^T = K Q^T and dP^T = V dO^T: this warp's 32 keys x 32 queries.
      float st[2][4][4] = {}, dp[2][4][4] = {};
#pragma unroll
      for (int kc = 0; kc < D / 16; ++kc) {
        uint32_t ka[2][4], va[2][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          const int off = (wk * 32 + mt * 16 + (lane & 15)) * S + kc * 16 + (lane >> 4) * 8;
          Ldmatrix(ka[mt], Ks + off);
          Ldmatrix(va[mt], Vs + off);
        }
#pragma unroll
        for (int np = 0; np < 2; ++np) {
          const int off = (wq * 32 + np * 16 + (lane & 7) + (lane >> 4) * 8) * S + kc * 16 + ((lane >> 3) & 1) * 8;
          uint32_t r4[4];
          Ldmatrix(r4, Qb + off);
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            Mma(st[mt][2 * np], ka[mt], r4[0], r4[1]);
            Mma(st[mt][2 * np + 1], ka[mt], r4[2], r4[3]);
          }
          Ldmatrix(r4, dOb + off);
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            Mma(dp[mt][2 * np], va[mt], r4[0], r4[1]);
            Mma(dp[mt][2 * np + 1], va[mt], r4[2], r4[3]);
          }
        }
      }
      // P = exp(S - lse) where visible; dS = P (dP - rowDot) scale. Only blocks that cross the
      // diagonal, the window's edge or a sequence's end need the per-element test.
      const bool edge = q0 + BQ > len || k0 + BK > len || (causal && q0 < k0 + BK - 1) || (window > 0 && q0 + BQ - 1 - k0 >= window);
      const int colBase = wq * 32 + 2 * tig;  // this thread's queries: colBase + 8 nt + {0, 1} (in the block)
      if (edge) {
        // Two compares a score against the queries [a, b) that see its key (relative to q0 + colBase).
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
          for (int hk = 0; hk < 2; ++hk) {
            int a, b;
            VisibleQueries(k0 + wk * 32 + mt * 16 + g + 8 * hk, len, causal, window, a, b);
            a -= q0 + colBase;
            b -= q0 + colBase;
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
              for (int c = 0; c < 2; ++c) {
                const int rel = nt * 8 + c;
                if (rel < a || rel >= b) st[mt][nt][2 * hk + c] = -INFINITY;
              }
            }
          }
        }
      }
      float lq[4][2], dq[4][2];
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          lq[nt][c] = Lb[colBase + nt * 8 + c];
          dq[nt][c] = Db[colBase + nt * 8 + c];
        }
      }
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          const int rowK = wk * 32 + mt * 16 + g;  // this thread's keys: rowK, rowK + 8 (in the block)
          const int col = colBase + nt * 8;
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float p = Exp2(fmaf(st[mt][nt][e], scaleLog2, -lq[nt][e & 1]));  // masked scores are -inf: p = 0
            st[mt][nt][e] = p;
            dp[mt][nt][e] = p * (dp[mt][nt][e] - dq[nt][e & 1]) * scale;
          }
          *reinterpret_cast<uint32_t*>(Ps + rowK * SP + col) = Pack(st[mt][nt][0], st[mt][nt][1]);
          *reinterpret_cast<uint32_t*>(Ps + (rowK + 8) * SP + col) = Pack(st[mt][nt][2], st[mt][nt][3]);
          *reinterpret_cast<uint32_t*>(dSs + rowK * SP + col) = Pack(dp[mt][nt][0], dp[mt][nt][1]);
          *reinterpret_cast<uint32_t*>(dSs + (rowK + 8) * SP + col) = Pack(dp[mt][nt][2], dp[mt][nt][3]);
        }
      }
    }
    __syncthreads();

    // dV += P^T dO and dK += dS^T Q: this warp's 32 keys x half the head dim, over the 64 queries.
#pragma unroll
    for (int kk = 0; kk < BQ / 16; ++kk) {
      uint32_t pa[2][4], da[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const int off = (wk * 32 + mt * 16 + (lane & 15)) * SP + kk * 16 + (lane >> 4) * 8;
        Ldmatrix(pa[mt], Ps + off);
        Ldmatrix(da[mt], dSs + off);
      }
#pragma unroll
      for (int dpair = 0; dpair < kHalf / 16; ++dpair) {
        const int off = (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * S + wq * kHalf + dpair * 16 + (lane >> 4) * 8;
        uint32_t r4[4];
        LdmatrixT(r4, dOb + off);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          Mma(dV[mt][2 * dpair], pa[mt], r4[0], r4[1]);
          Mma(dV[mt][2 * dpair + 1], pa[mt], r4[2], r4[3]);
        }
        LdmatrixT(r4, Qb + off);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          Mma(dK[mt][2 * dpair], da[mt], r4[0], r4[1]);
          Mma(dK[mt][2 * dpair + 1], da[mt], r4[2], r4[3]);
        }
      }
    }

    // dQ[32 queries of wq4, a quarter of the head dim] += dS K over this CTA's keys.
    float c[2][kQuarter / 8][4] = {};
#pragma unroll
    for (int kc = 0; kc < BK / 16; ++kc) {
      uint32_t dsa[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        LdmatrixT(dsa[mt], dSs + (kc * 16 + (lane & 7) + (lane >> 4) * 8) * SP + wq4 * 32 + mt * 16 + ((lane >> 3) & 1) * 8);
      }
#pragma unroll
      for (int dpair = 0; dpair < kQuarter / 16; ++dpair) {
        uint32_t r4[4];
        LdmatrixT(r4, Ks + (kc * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * S + wc * kQuarter + dpair * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          Mma(c[mt][2 * dpair], dsa[mt], r4[0], r4[1]);
          Mma(c[mt][2 * dpair + 1], dsa[mt], r4[2], r4[3]);
        }
      }
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      const int i0 = q0 + wq4 * 32 + mt * 16 + g;
#pragma unroll
      for (int t = 0; t < kQuarter / 8; ++t) {
        const int col = wc * kQuarter + t * 8 + 2 * tig;
        if (i0 < len) AtomicAdd2(dqAcc + (int64_t(start + i0) * Hq + h) * D + col, c[mt][t][0], c[mt][t][1]);
        if (i0 + 8 < len) AtomicAdd2(dqAcc + (int64_t(start + i0 + 8) * Hq + h) * D + col, c[mt][t][2], c[mt][t][3]);
      }
    }
  }

#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int j = k0 + wk * 32 + mt * 16 + g + r * 8;
      if (j >= len) continue;
      const int64_t at = (int64_t(start + j) * Hkv + kvh) * D + wq * kHalf + 2 * tig;
#pragma unroll
      for (int dt = 0; dt < kHalf / 8; ++dt) {
        AtomicAdd2(dkAcc + at + dt * 8, dK[mt][dt][2 * r], dK[mt][dt][2 * r + 1]);
        AtomicAdd2(dvAcc + at + dt * 8, dV[mt][dt][2 * r], dV[mt][dt][2 * r + 1]);
      }
    }
  }
}

template <int D>
void LaunchForward(const AttentionShape& s, const void* q, const void* k, const void* v, const int32_t* cu, void* o, float* lse) {
  static const bool ready = (AllowSmem("attention", FwdKernel<D>, FwdSmem<D>()), true);
  (void)ready;
  dim3 grid(unsigned((s.maxLen + kFwdRows - 1) / kFwdRows), unsigned(s.Hq), unsigned(s.batch));
  FwdKernel<D><<<grid, kFwdWarps * 32, FwdSmem<D>(), ComputeStream()>>>(
      static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v), cu, static_cast<bf16*>(o), lse,
      int(s.T), int(s.Hq), int(s.Hkv), s.causal ? 1 : 0, int(s.window), s.scale * kLog2e);
  CheckLaunch("attention");
}

template <int D>
void LaunchBackward(const AttentionShape& s, const void* dout, const void* q, const void* k, const void* v, const float* lse,
                    const int32_t* cu, float* dqAcc, float* dkAcc, float* dvAcc, const float* rowDot) {
  static const bool ready = (AllowSmem("attentionBackward", BwdKernel<D>, BwdSmem<D>()), true);
  (void)ready;
  dim3 grid(unsigned((s.maxLen + kBwdKeys - 1) / kBwdKeys), unsigned(s.Hq), unsigned(s.batch));
  BwdKernel<D><<<grid, kBwdWarps * 32, BwdSmem<D>(), ComputeStream()>>>(
      static_cast<const bf16*>(dout), static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v), lse,
      rowDot, cu, dqAcc, dkAcc, dvAcc, int(s.T), int(s.Hq), int(s.Hkv), s.causal ? 1 : 0,
      int(s.window), s.scale, s.scale * kLog2e);
  CheckLaunch("attentionBackward");
}

}  // namespace

namespace {
AttentionKernels gKernels = AttentionKernels::Auto;

// The wgmma kernels exist only in an sm_90a build, and sm_90a code runs only on compute capability 9.0.
bool WgmmaRunsHere(const char* op) {
#if defined(TESSERA_WGMMA)
  static const bool hopper = [op] {
    EnsureInit(op);
    int dev = 0, major = 0, minor = 0;
    Check(op, "cudaGetDevice", cudaGetDevice(&dev));
    Check(op, "cudaDeviceGetAttribute", cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    Check(op, "cudaDeviceGetAttribute", cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    return major == 9 && minor == 0;
  }();
  return hopper;
#else
  (void)op;
  return false;
#endif
}

bool UseWgmma(const char* op) { return gKernels != AttentionKernels::MmaSync && WgmmaRunsHere(op); }
}  // namespace

void SetAttentionKernels(const char* op, AttentionKernels kernels) {
  if (kernels == AttentionKernels::Wgmma && !WgmmaRunsHere(op)) {
    throw OpError(std::string(op) + ": the wgmma attention kernels need an sm_90a build (TESSERA_CUDA_ARCHITECTURES=90a) on a compute capability 9.0 GPU");
  }
  gKernels = kernels;
}

const char* AttentionKernelsInUse() { return UseWgmma("attention") ? "wgmma" : "mma"; }

bool AttentionWgmmaRuns(const char* op) { return WgmmaRunsHere(op); }

bool AttentionHeadDimSupported(int64_t Dh) { return Dh == 64 || Dh == 128; }

void AttentionForward(const AttentionShape& s, const void* q, const void* k, const void* v, const int32_t* cu, void* o,
                      float* lse) {
  if (s.T == 0 || s.maxLen == 0) return;
  if (UseWgmma("attention") && AttentionWgmmaGridFits(s)) {
    AttentionForwardWgmma(s, q, k, v, cu, o, lse);
  } else if (s.Dh == 64) {
    LaunchForward<64>(s, q, k, v, cu, o, lse);
  } else {
    LaunchForward<128>(s, q, k, v, cu, o, lse);
  }
}

void AttentionBackward(const AttentionShape& s, const void* dout, const void* q, const void* k, const void* v, const void* o,
                       const float* lse, const int32_t* cu, void* dq, void* dk, void* dv, float* acc, float* rowDot) {
  if (s.T == 0 || s.maxLen == 0) return;
  const int64_t rows = s.T * s.Hq, nq = rows * s.Dh, nkv = s.T * s.Hkv * s.Dh;
  const int64_t accRows = rows + 2 * s.T * s.Hkv;
  float* dqAcc = acc;
  float* dkAcc = acc + nq;
  float* dvAcc = dkAcc + nkv;
  constexpr int kPrepThreads = 256;
  const int64_t rowsPerBlock = kPrepThreads / 32 * (32 / (s.Dh / 8));
  auto prep = s.Dh == 64 ? RowDotZeroKernel<64> : RowDotZeroKernel<128>;
  prep<<<unsigned((rows + rowsPerBlock - 1) / rowsPerBlock), kPrepThreads, 0, ComputeStream()>>>(
      static_cast<const bf16*>(dout), static_cast<const bf16*>(o), rowDot, acc, rows, accRows, int(s.T), int(s.Hq));
  CheckLaunch("attentionBackward");
  if (UseWgmma("attentionBackward") && AttentionWgmmaGridFits(s)) {
    AttentionBackwardWgmma(s, dout, q, k, v, lse, cu, dqAcc, dkAcc, dvAcc, rowDot);
  } else if (s.Dh == 64) {
    LaunchBackward<64>(s, dout, q, k, v, lse, cu, dqAcc, dkAcc, dvAcc, rowDot);
  } else {
    LaunchBackward<128>(s, dout, q, k, v, lse, cu, dqAcc, dkAcc, dvAcc, rowDot);
  }
  if (!dq) return;  // the caller reads the fp32 sums in acc
  CastSumsKernel<<<GridFor((nq + 2 * nkv) / 4), kThreads, 0, ComputeStream()>>>(
      acc, static_cast<bf16*>(dq), static_cast<bf16*>(dk), static_cast<bf16*>(dv), nq, nkv);
  CheckLaunch("attentionBackward");
}

}  // namespace tessera::cuda
