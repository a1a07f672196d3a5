// Varlen flash attention (FlashAttention-2 style) on tensor cores: mma.sync m16n8k16 bf16 with
// fp32 accumulation, operands fed from shared memory by ldmatrix, tiles loaded by cp.async.
//
// Forward: a CTA of 4 warps per (query block of 128 rows, q head, sequence); each warp owns two
// tiles of 16 query rows and walks key blocks (64 keys at Dh 64, 32 at Dh 128; double-buffered)
// with an online softmax in the log2 domain. Key blocks wholly above the diagonal or left of the
// window are never visited.
//
// Backward: rowDot = rowsum(dout * o) first; then a CTA of 8 warps per (key block of 128, q
// head, sequence) keeps dK, dV of its 128 keys in registers (32 keys x half the head dim per
// warp) and walks the query blocks of 64 that see them (double-buffered), recomputing P from the
// saved lse; P and dS pass through shared memory between the warp tilings (see BwdKernel). A CTA per q
// head rather than per kv head keeps the causal critical path at one head's query blocks: its
// dK, dV are per-q-head fp32 partials, summed over each kv head's group by a last small kernel
// (in a fixed order). dQ is summed by atomics into an fp32 buffer (each CTA adds dS K for its
// keys), then cast to bf16.
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

constexpr int kRowDotWarps = 4;

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

// rowDot[h, t] = dout[t, h, :] . o[t, h, :] (fp32), a warp per row.
__global__ void RowDotKernel(const bf16* __restrict__ dout, const bf16* __restrict__ o, float* __restrict__ rowDot, int T,
                             int Hq, int D) {
  const int64_t r = blockIdx.x * int64_t(kRowDotWarps) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= int64_t(T) * Hq) return;
  float s = 0.f;
  for (int d = lane; d < D; d += 32) s += __bfloat162float(dout[r * D + d]) * __bfloat162float(o[r * D + d]);
  s = WarpSum(s);
  if (lane == 0) rowDot[(r % Hq) * T + r / Hq] = s;
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
                                                              float* __restrict__ dkPart, float* __restrict__ dvPart, int T,
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
      const int64_t at = (int64_t(start + j) * Hq + h) * D + wq * kHalf + 2 * tig;
#pragma unroll
      for (int dt = 0; dt < kHalf / 8; ++dt) {
        *reinterpret_cast<float2*>(dkPart + at + dt * 8) = make_float2(dK[mt][dt][2 * r], dK[mt][dt][2 * r + 1]);
        *reinterpret_cast<float2*>(dvPart + at + dt * 8) = make_float2(dV[mt][dt][2 * r], dV[mt][dt][2 * r + 1]);
      }
    }
  }
}

// out[t, kvh, :] (bf16) = sum over the group's q heads r of part[t, kvh * rep + r, :].
__global__ void GroupSumKernel(const float* __restrict__ part, bf16* __restrict__ out, int64_t n, int rep, int D) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = i % D, row = i / D;  // row = t * Hkv + kvh
    const float* p = part + (row * rep) * D + d;
    float s = 0.f;
    for (int r = 0; r < rep; ++r) s += p[int64_t(r) * D];
    out[i] = __float2bfloat16_rn(s);
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
                    const int32_t* cu, float* dqAcc, float* dkPart, float* dvPart, const float* rowDot) {
  static const bool ready = (AllowSmem("attentionBackward", BwdKernel<D>, BwdSmem<D>()), true);
  (void)ready;
  dim3 grid(unsigned((s.maxLen + kBwdKeys - 1) / kBwdKeys), unsigned(s.Hq), unsigned(s.batch));
  BwdKernel<D><<<grid, kBwdWarps * 32, BwdSmem<D>(), ComputeStream()>>>(
      static_cast<const bf16*>(dout), static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v), lse,
      rowDot, cu, dqAcc, dkPart, dvPart, int(s.T), int(s.Hq), int(s.Hkv), s.causal ? 1 : 0,
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
  if (UseWgmma("attention")) {
    AttentionForwardWgmma(s, q, k, v, cu, o, lse);
  } else if (s.Dh == 64) {
    LaunchForward<64>(s, q, k, v, cu, o, lse);
  } else {
    LaunchForward<128>(s, q, k, v, cu, o, lse);
  }
}

void AttentionBackward(const AttentionShape& s, const void* dout, const void* q, const void* k, const void* v, const void* o,
                       const float* lse, const int32_t* cu, void* dq, void* dk, void* dv, float* dqAccum, float* rowDot,
                       float* dkvPart) {
  if (s.T == 0 || s.maxLen == 0) return;
  const int64_t n = s.T * s.Hq * s.Dh;
  Check("attentionBackward", "cudaMemsetAsync", cudaMemsetAsync(dqAccum, 0, n * sizeof(float), ComputeStream()));
  const int64_t rows = s.T * s.Hq;
  RowDotKernel<<<unsigned((rows + kRowDotWarps - 1) / kRowDotWarps), kRowDotWarps * 32, 0, ComputeStream()>>>(
      static_cast<const bf16*>(dout), static_cast<const bf16*>(o), rowDot, int(s.T), int(s.Hq), int(s.Dh));
  CheckLaunch("attentionBackward");
  float* dkPart = dkvPart;
  float* dvPart = dkvPart + n;
  if (UseWgmma("attentionBackward")) {
    AttentionBackwardWgmma(s, dout, q, k, v, lse, cu, dqAccum, dkPart, dvPart, rowDot);
  } else if (s.Dh == 64) {
    LaunchBackward<64>(s, dout, q, k, v, lse, cu, dqAccum, dkPart, dvPart, rowDot);
  } else {
    LaunchBackward<128>(s, dout, q, k, v, lse, cu, dqAccum, dkPart, dvPart, rowDot);
  }
  Cast(DType::F32, dqAccum, DType::BF16, dq, n);
  const int64_t nkv = s.T * s.Hkv * s.Dh;
  const int rep = int(s.Hq / s.Hkv);
  GroupSumKernel<<<GridFor(nkv), kThreads, 0, ComputeStream()>>>(dkPart, static_cast<bf16*>(dk), nkv, rep, int(s.Dh));
  CheckLaunch("attentionBackward");
  GroupSumKernel<<<GridFor(nkv), kThreads, 0, ComputeStream()>>>(dvPart, static_cast<bf16*>(dv), nkv, rep, int(s.Dh));
  CheckLaunch("attentionBackward");
}

}  // namespace tessera::cuda
