// Causal (optionally sliding-window) attention over packed variable-length sequences with
// grouped-query heads, flash-style: each task takes a block of queries of one head and walks
// key blocks with an online softmax, so memory is O(T*D), never O(T^2). The forward returns
// the log-sum-exp per (head, token) for the backward, which recomputes the probabilities:
// one pass computes dq per query block, another dk/dv per key block (summing the query heads
// of its group), so no two tasks write the same row.
// Layouts: q[T,Hq,Dh], k/v[T,Hkv,Dh], o[T,Hq,Dh], lse[Hq,T], cu_seqlens int32[B+1].
#include <cmath>
#include <limits>

#include "core/tensor.h"
#include "cpu/fast_math.h"
#include "cpu/parallel.h"

namespace tessera {
namespace {

constexpr int64_t BQ = 32, BK = 64;

struct Seq {
  int64_t start, len;
};

std::vector<Seq> Sequences(const char* op, const TensorImpl& cu, int64_t T) {
  if (cu.dtype != DType::I32 || cu.ndim() != 1 || cu.numel < 2) {
    throw OpError(std::string(op) + ": cu_seqlens must be int32 [B+1] with B >= 1");
  }
  const int32_t* c = cu.data<int32_t>();
  if (c[0] != 0) throw OpError(std::string(op) + ": cu_seqlens must start at 0, got " + std::to_string(c[0]));
  std::vector<Seq> seqs;
  for (int64_t b = 1; b < cu.numel; ++b) {
    if (c[b] < c[b - 1]) throw OpError(std::string(op) + ": cu_seqlens must be non-decreasing (at index " + std::to_string(b) + ")");
    if (c[b] > c[b - 1]) seqs.push_back({c[b - 1], c[b] - c[b - 1]});
  }
  if (c[cu.numel - 1] != T) {
    throw OpError(std::string(op) + ": cu_seqlens must end at T=" + std::to_string(T) + ", got " +
                  std::to_string(c[cu.numel - 1]));
  }
  return seqs;
}

struct Geometry {
  int64_t T, Hq, Hkv, Dh, rep;
  bool causal;
  int64_t window;  // 0: none
};

struct Block {
  int64_t seq, head, first;  // head: query head (forward, dq) or kv head (dk/dv)
};

std::vector<Block> Blocks(const std::vector<Seq>& seqs, int64_t heads, int64_t size) {
  std::vector<Block> out;
  for (size_t s = 0; s < seqs.size(); ++s)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t f = 0; f < seqs[s].len; f += size) out.push_back({static_cast<int64_t>(s), h, f});
  return out;
}

// Key range [lo, hi) that queries [q0, q1) of one sequence may see.
void KeyRange(const Geometry& g, int64_t len, int64_t q0, int64_t q1, int64_t* lo, int64_t* hi) {
  *lo = g.window > 0 ? std::max<int64_t>(0, q0 - g.window + 1) : 0;
  *hi = g.causal ? q1 : len;
}

// Per-thread work buffers, grown on demand and reused across blocks and calls: with many
// short sequences a block is tiny, and allocating and clearing its buffers would dominate.
template <class T>
struct Scratch {
  std::vector<T> s, ds, kt, vt, acc, acc2, m, l;
  void Reserve(int64_t Dh) {
    auto grow = [](std::vector<T>& v, int64_t n) {
      if (static_cast<int64_t>(v.size()) < n) v.resize(n);
    };
    grow(s, BQ * BK);
    grow(ds, BQ * BK);
    grow(kt, Dh * BK);
    grow(vt, Dh * BK);
    grow(acc, std::max(BQ, BK) * Dh);
    grow(acc2, BK * Dh);
    grow(m, BQ);
    grow(l, BQ);
  }
};

template <class T>
Scratch<T>& ThreadScratch(int64_t Dh) {
  thread_local Scratch<T> scratch;
  scratch.Reserve(Dh);
  return scratch;
}

// Copies rows [k0,k0+nk) of head `h` of x[T,H,Dh] (sequence at `start`) into xt[Dh][BK].
// Columns past nk keep stale values: score columns past nk are computed but never read.
template <class T>
TESSERA_INLINE void TransposeBlock(const T* x, int64_t H, int64_t Dh, int64_t start, int64_t h, int64_t k0, int64_t nk, T* xt) {
  for (int64_t jj = 0; jj < nk; ++jj) {
    const T* row = x + ((start + k0 + jj) * H + h) * Dh;
    for (int64_t d = 0; d < Dh; ++d) xt[d * BK + jj] = row[d];
  }
}

// S[ii][0..BK) = scale * q_i . k_j for nq query rows (stride qStride) against Kt; the row of
// BK accumulators stays in registers across the Dh loop.
template <class T>
TESSERA_INLINE void Scores(const T* q, int64_t qStride, int64_t nq, const T* Kt, int64_t Dh, T scale, T* S) {
  for (int64_t ii = 0; ii < nq; ++ii) {
    T acc[BK] = {};
    const T* qi = q + ii * qStride;
    for (int64_t d = 0; d < Dh; ++d) {
      T qd = qi[d];
      const T* kt = Kt + d * BK;
      for (int jj = 0; jj < BK; ++jj) acc[jj] += qd * kt[jj];
    }
    T* out = S + ii * BK;
    for (int jj = 0; jj < BK; ++jj) out[jj] = acc[jj] * scale;
  }
}

// a[0..Dh) += sum over j in [jLo,jHi) of w[j] * row_j, rows at base + j*rowStride. Written
// with GCC vector types (64 bytes: one AVX-512 register, two AVX2, four SSE) so that the
// accumulators stay in registers; even and odd j go to separate accumulators to hide FMA latency.
template <class T>
TESSERA_INLINE void AccumulateRows(T* a, const T* w, int64_t jLo, int64_t jHi, const T* base, int64_t rowStride,
                                   int64_t Dh) {
  typedef T V __attribute__((vector_size(64)));
  typedef T VU __attribute__((vector_size(64), aligned(alignof(T)), may_alias));  // unaligned loads
  constexpr int L = 64 / sizeof(T);
  auto at = [](const T* p) -> const VU& { return *reinterpret_cast<const VU*>(p); };
  int64_t d0 = 0;
  for (; d0 + 2 * L <= Dh; d0 += 2 * L) {
    V r0 = at(a + d0), r1 = at(a + d0 + L), s0 = V{}, s1 = V{};
    int64_t j = jLo;
    for (; j + 2 <= jHi; j += 2) {
      const T* x = base + j * rowStride + d0;
      const T* y = x + rowStride;
      r0 += w[j] * at(x);
      r1 += w[j] * at(x + L);
      s0 += w[j + 1] * at(y);
      s1 += w[j + 1] * at(y + L);
    }
    if (j < jHi) {
      const T* x = base + j * rowStride + d0;
      r0 += w[j] * at(x);
      r1 += w[j] * at(x + L);
    }
    r0 += s0;
    r1 += s1;
    *reinterpret_cast<VU*>(a + d0) = r0;
    *reinterpret_cast<VU*>(a + d0 + L) = r1;
  }
  for (; d0 < Dh; ++d0) {
    T acc = a[d0];
    for (int64_t j = jLo; j < jHi; ++j) acc += w[j] * base[j * rowStride + d0];
    a[d0] = acc;
  }
}

// Keys of block [k0, k0+nk) visible to local query i: [*jLo, *jHi) in block coordinates.
TESSERA_INLINE void RowRange(const Geometry& g, int64_t i, int64_t k0, int64_t nk, int64_t* jLo, int64_t* jHi) {
  int64_t lo = g.window > 0 ? i - g.window + 1 - k0 : 0;
  int64_t hi = g.causal ? i + 1 - k0 : nk;
  *jLo = std::max<int64_t>(lo, 0);
  *jHi = std::min<int64_t>(hi, nk);
}

template <class T>
TESSERA_INLINE void ForwardBlock(const Geometry& g, const Seq& sq, int64_t h, int64_t q0, const T* q, const T* k, const T* v, T scale,
                  T* o, T* lse) {
  const int64_t Dh = g.Dh, kvh = h / g.rep, kvStride = g.Hkv * Dh;
  const int64_t q1 = std::min(q0 + BQ, sq.len), nq = q1 - q0;
  const T ninf = -std::numeric_limits<T>::infinity();
  Scratch<T>& w = ThreadScratch<T>(Dh);
  T *S = w.s.data(), *Kt = w.kt.data(), *acc = w.acc.data(), *m = w.m.data(), *l = w.l.data();
  std::fill(acc, acc + nq * Dh, T(0));
  std::fill(m, m + nq, ninf);
  std::fill(l, l + nq, T(0));
  int64_t lo, hi;
  KeyRange(g, sq.len, q0, q1, &lo, &hi);
  const T* qBase = q + ((sq.start + q0) * g.Hq + h) * Dh;
  for (int64_t k0 = lo; k0 < hi; k0 += BK) {
    int64_t nk = std::min(BK, hi - k0);
    TransposeBlock(k, g.Hkv, Dh, sq.start, kvh, k0, nk, Kt);
    Scores(qBase, g.Hq * Dh, nq, Kt, Dh, scale, S);
    const T* vBase = v + ((sq.start + k0) * g.Hkv + kvh) * Dh;
    for (int64_t ii = 0; ii < nq; ++ii) {
      int64_t jLo, jHi;
      RowRange(g, q0 + ii, k0, nk, &jLo, &jHi);
      if (jLo >= jHi) continue;
      T* s = S + ii * BK;
      T mx = cpu::Max(s + jLo, jHi - jLo);
      T mNew = std::max(m[ii], mx);
      T corr = cpu::FastExp(m[ii] - mNew);
      T* a = acc + ii * Dh;
      for (int64_t d = 0; d < Dh; ++d) a[d] *= corr;
      for (int64_t jj = jLo; jj < jHi; ++jj) s[jj] = cpu::FastExp(s[jj] - mNew);
      T sum = static_cast<T>(cpu::Sum(s + jLo, jHi - jLo));
      AccumulateRows(a, s, jLo, jHi, vBase, kvStride, Dh);
      l[ii] = l[ii] * corr + sum;
      m[ii] = mNew;
    }
  }
  for (int64_t ii = 0; ii < nq; ++ii) {
    int64_t t = sq.start + q0 + ii;
    T* oi = o + (t * g.Hq + h) * Dh;
    T inv = l[ii] > 0 ? T(1) / l[ii] : T(0);
    for (int64_t d = 0; d < Dh; ++d) oi[d] = acc[ii * Dh + d] * inv;
    lse[h * g.T + t] = l[ii] > 0 ? m[ii] + std::log(l[ii]) : ninf;
  }
}

TESSERA_SIMD_CLONES void ForwardBlockF(const Geometry& g, const Seq& s, int64_t h, int64_t q0, const float* q,
                                       const float* k, const float* v, float scale, float* o, float* lse) {
  ForwardBlock<float>(g, s, h, q0, q, k, v, scale, o, lse);
}
TESSERA_SIMD_CLONES void ForwardBlockF(const Geometry& g, const Seq& s, int64_t h, int64_t q0, const double* q,
                                       const double* k, const double* v, double scale, double* o, double* lse) {
  ForwardBlock<double>(g, s, h, q0, q, k, v, scale, o, lse);
}

// Recomputes P = exp(S - lse) and dS = P * (dP - D) * scale for nq queries of head h against
// key block [k0, k0+nk), zero where a key is not visible.
template <class T>
TESSERA_INLINE void ProbsAndGrads(const Geometry& g, const Seq& sq, int64_t h, int64_t q0, int64_t nq, int64_t k0,
                                  int64_t nk, const T* qBase, const T* dBase, const T* Kt, const T* Vt, const T* lse,
                                  const T* Dv, T scale, T* P, T* dS) {
  const int64_t stride = g.Hq * g.Dh;
  Scores(qBase, stride, nq, Kt, g.Dh, scale, P);
  Scores(dBase, stride, nq, Vt, g.Dh, T(1), dS);
  for (int64_t ii = 0; ii < nq; ++ii) {
    int64_t jLo, jHi;
    RowRange(g, q0 + ii, k0, nk, &jLo, &jHi);
    int64_t t = sq.start + q0 + ii;
    T L = lse[h * g.T + t], Di = Dv[h * g.T + t];
    T* p = P + ii * BK;
    T* ds = dS + ii * BK;
    for (int64_t jj = 0; jj < nk; ++jj) {
      bool vis = jj >= jLo && jj < jHi;
      T pj = vis ? cpu::FastExp(p[jj] - L) : T(0);
      p[jj] = pj;
      ds[jj] = pj * (ds[jj] - Di) * scale;
    }
  }
}

// dq for queries [q0, q0+BQ) of head h: dq = sum over key blocks of dS K.
template <class T>
TESSERA_INLINE void DqBlock(const Geometry& g, const Seq& sq, int64_t h, int64_t q0, const T* q, const T* k, const T* v, const T* dout,
             const T* lse, const T* Dv, T scale, T* dq) {
  const int64_t Dh = g.Dh, kvh = h / g.rep;
  const int64_t q1 = std::min(q0 + BQ, sq.len), nq = q1 - q0;
  Scratch<T>& w = ThreadScratch<T>(Dh);
  T *P = w.s.data(), *dS = w.ds.data(), *Kt = w.kt.data(), *Vt = w.vt.data(), *acc = w.acc.data();
  std::fill(acc, acc + nq * Dh, T(0));
  int64_t lo, hi;
  KeyRange(g, sq.len, q0, q1, &lo, &hi);
  const T* qBase = q + ((sq.start + q0) * g.Hq + h) * Dh;
  const T* dBase = dout + ((sq.start + q0) * g.Hq + h) * Dh;
  for (int64_t k0 = lo; k0 < hi; k0 += BK) {
    int64_t nk = std::min(BK, hi - k0);
    TransposeBlock(k, g.Hkv, Dh, sq.start, kvh, k0, nk, Kt);
    TransposeBlock(v, g.Hkv, Dh, sq.start, kvh, k0, nk, Vt);
    ProbsAndGrads(g, sq, h, q0, nq, k0, nk, qBase, dBase, Kt, Vt, lse, Dv, scale, P, dS);
    const T* kBase = k + ((sq.start + k0) * g.Hkv + kvh) * Dh;
    for (int64_t ii = 0; ii < nq; ++ii) AccumulateRows(acc + ii * Dh, dS + ii * BK, 0, nk, kBase, g.Hkv * Dh, Dh);
  }
  for (int64_t ii = 0; ii < nq; ++ii) {
    T* out = dq + ((sq.start + q0 + ii) * g.Hq + h) * Dh;
    for (int64_t d = 0; d < Dh; ++d) out[d] = acc[ii * Dh + d];
  }
}

// dk, dv for keys [k0, k0+BK) of kv head kvh, summed over the query heads of its group:
// dv = P^T dO, dk = dS^T Q (columns of P and dS gathered so rows accumulate in registers).
template <class T>
TESSERA_INLINE void DkvBlock(const Geometry& g, const Seq& sq, int64_t kvh, int64_t k0, const T* q, const T* k, const T* v,
              const T* dout, const T* lse, const T* Dv, T scale, T* dk, T* dv) {
  const int64_t Dh = g.Dh;
  const int64_t k1 = std::min(k0 + BK, sq.len), nk = k1 - k0;
  Scratch<T>& w = ThreadScratch<T>(Dh);
  T *P = w.s.data(), *dS = w.ds.data(), *Kt = w.kt.data(), *Vt = w.vt.data(), *ak = w.acc.data(), *av = w.acc2.data();
  std::fill(ak, ak + nk * Dh, T(0));
  std::fill(av, av + nk * Dh, T(0));
  T pc[BQ], dc[BQ];
  TransposeBlock(k, g.Hkv, Dh, sq.start, kvh, k0, nk, Kt);
  TransposeBlock(v, g.Hkv, Dh, sq.start, kvh, k0, nk, Vt);
  int64_t qLo = g.causal ? k0 : 0;
  int64_t qHi = g.window > 0 ? std::min(sq.len, k1 - 1 + g.window) : sq.len;
  const int64_t stride = g.Hq * Dh;
  for (int64_t r = 0; r < g.rep; ++r) {
    int64_t h = kvh * g.rep + r;
    for (int64_t q0 = qLo; q0 < qHi; q0 += BQ) {
      int64_t nq = std::min(BQ, qHi - q0);
      const T* qBase = q + ((sq.start + q0) * g.Hq + h) * Dh;
      const T* dBase = dout + ((sq.start + q0) * g.Hq + h) * Dh;
      ProbsAndGrads(g, sq, h, q0, nq, k0, nk, qBase, dBase, Kt, Vt, lse, Dv, scale, P, dS);
      for (int64_t jj = 0; jj < nk; ++jj) {
        for (int64_t ii = 0; ii < nq; ++ii) {
          pc[ii] = P[ii * BK + jj];
          dc[ii] = dS[ii * BK + jj];
        }
        AccumulateRows(av + jj * Dh, pc, 0, nq, dBase, stride, Dh);
        AccumulateRows(ak + jj * Dh, dc, 0, nq, qBase, stride, Dh);
      }
    }
  }
  for (int64_t jj = 0; jj < nk; ++jj) {
    int64_t off = ((sq.start + k0 + jj) * g.Hkv + kvh) * Dh;
    for (int64_t d = 0; d < Dh; ++d) {
      dk[off + d] = ak[jj * Dh + d];
      dv[off + d] = av[jj * Dh + d];
    }
  }
}

TESSERA_SIMD_CLONES void DqBlockF(const Geometry& g, const Seq& s, int64_t h, int64_t q0, const float* q,
                                  const float* k, const float* v, const float* dout, const float* lse, const float* Dv,
                                  float scale, float* dq) {
  DqBlock<float>(g, s, h, q0, q, k, v, dout, lse, Dv, scale, dq);
}
TESSERA_SIMD_CLONES void DqBlockF(const Geometry& g, const Seq& s, int64_t h, int64_t q0, const double* q,
                                  const double* k, const double* v, const double* dout, const double* lse,
                                  const double* Dv, double scale, double* dq) {
  DqBlock<double>(g, s, h, q0, q, k, v, dout, lse, Dv, scale, dq);
}
TESSERA_SIMD_CLONES void DkvBlockF(const Geometry& g, const Seq& s, int64_t h, int64_t k0, const float* q,
                                   const float* k, const float* v, const float* dout, const float* lse,
                                   const float* Dv, float scale, float* dk, float* dv) {
  DkvBlock<float>(g, s, h, k0, q, k, v, dout, lse, Dv, scale, dk, dv);
}
TESSERA_SIMD_CLONES void DkvBlockF(const Geometry& g, const Seq& s, int64_t h, int64_t k0, const double* q,
                                   const double* k, const double* v, const double* dout, const double* lse,
                                   const double* Dv, double scale, double* dk, double* dv) {
  DkvBlock<double>(g, s, h, k0, q, k, v, dout, lse, Dv, scale, dk, dv);
}

Geometry GeometryOf(const char* op, const TensorImpl& q, const TensorImpl& k, const TensorImpl& v, bool causal,
                    double window) {
  if (q.ndim() != 3 || k.ndim() != 3 || v.ndim() != 3) throw OpError(std::string(op) + ": q, k, v must be [T,H,Dh]");
  Geometry g{q.dim(0), q.dim(1), k.dim(1), q.dim(2), 1, causal, static_cast<int64_t>(window)};
  if (k.shape != v.shape || k.dim(0) != g.T || k.dim(2) != g.Dh || g.Hkv == 0 || g.Hq % g.Hkv != 0 ||
      q.dtype != k.dtype || q.dtype != v.dtype) {
    throw OpError(std::string(op) + ": k and v must be [T,Hkv,Dh] of q's dtype with Hq divisible by Hkv");
  }
  g.rep = g.Hq / g.Hkv;
  return g;
}

// attention(q, k, v, cu, causal, window, scale) -> [o, lse]
Napi::Value Attention(const Napi::CallbackInfo& info) {
  TensorImpl& q = TensorArg(info, 0);
  TensorImpl& k = TensorArg(info, 1);
  TensorImpl& v = TensorArg(info, 2);
  TensorImpl& cu = TensorArg(info, 3);
  Geometry g = GeometryOf("attention", q, k, v, BoolArg(info, 4), NumberArg(info, 5));
  double scale = NumberArg(info, 6);
  auto seqs = Sequences("attention", cu, g.T);
  Out o = NewTensor(info.Env(), q.dtype, q.shape);
  Out lse = NewTensor(info.Env(), q.dtype, {g.Hq, g.T});
  auto blocks = Blocks(seqs, g.Hq, BQ);
  DispatchFloat("attention", q.dtype, [&](auto z) {
    using T = decltype(z);
    cpu::ParallelFor(static_cast<int64_t>(blocks.size()), 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const Block& bl = blocks[i];
        ForwardBlockF(g, seqs[bl.seq], bl.head, bl.first, q.data<T>(), k.data<T>(), v.data<T>(), static_cast<T>(scale),
                      o.t->data<T>(), lse.t->data<T>());
      }
    });
  });
  Napi::Array res = Napi::Array::New(info.Env(), 2);
  res.Set(0u, o.value);
  res.Set(1u, lse.value);
  return res;
}

// attentionBackward(dout, q, k, v, o, lse, cu, causal, window, scale) -> [dq, dk, dv]
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  TensorImpl& dout = TensorArg(info, 0);
  TensorImpl& q = TensorArg(info, 1);
  TensorImpl& k = TensorArg(info, 2);
  TensorImpl& v = TensorArg(info, 3);
  TensorImpl& o = TensorArg(info, 4);
  TensorImpl& lse = TensorArg(info, 5);
  TensorImpl& cu = TensorArg(info, 6);
  Geometry g = GeometryOf("attentionBackward", q, k, v, BoolArg(info, 7), NumberArg(info, 8));
  double scale = NumberArg(info, 9);
  if (dout.shape != q.shape || o.shape != q.shape || lse.numel != g.Hq * g.T || dout.dtype != q.dtype ||
      o.dtype != q.dtype || lse.dtype != q.dtype) {
    throw OpError("attentionBackward: dout and o must match q, lse must be [Hq,T]");
  }
  auto seqs = Sequences("attentionBackward", cu, g.T);
  Out dq = NewTensor(info.Env(), q.dtype, q.shape);
  Out dk = NewTensor(info.Env(), k.dtype, k.shape);
  Out dv = NewTensor(info.Env(), v.dtype, v.shape);
  DispatchFloat("attentionBackward", q.dtype, [&](auto z) {
    using T = decltype(z);
    // D[h,t] = dout . o, the softmax-backward row term.
    std::vector<T> D(g.Hq * g.T);
    const T *dp = dout.data<T>(), *op = o.data<T>();
    cpu::ParallelFor(g.T * g.Hq, 256, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        int64_t t = r / g.Hq, h = r % g.Hq;
        double s = 0;
        for (int64_t d = 0; d < g.Dh; ++d) s += double(dp[r * g.Dh + d]) * op[r * g.Dh + d];
        D[h * g.T + t] = static_cast<T>(s);
      }
    });
    // Tokens outside every sequence cannot exist (cu ends at T), so every row is written.
    auto qBlocks = Blocks(seqs, g.Hq, BQ);
    cpu::ParallelFor(static_cast<int64_t>(qBlocks.size()), 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const Block& bl = qBlocks[i];
        DqBlockF(g, seqs[bl.seq], bl.head, bl.first, q.data<T>(), k.data<T>(), v.data<T>(), dp, lse.data<T>(),
                 D.data(), static_cast<T>(scale), dq.t->data<T>());
      }
    });
    auto kBlocks = Blocks(seqs, g.Hkv, BK);
    cpu::ParallelFor(static_cast<int64_t>(kBlocks.size()), 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const Block& bl = kBlocks[i];
        DkvBlockF(g, seqs[bl.seq], bl.head, bl.first, q.data<T>(), k.data<T>(), v.data<T>(), dp, lse.data<T>(),
                  D.data(), static_cast<T>(scale), dk.t->data<T>(), dv.t->data<T>());
      }
    });
  });
  Napi::Array res = Napi::Array::New(info.Env(), 3);
  res.Set(0u, dq.value);
  res.Set(1u, dk.value);
  res.Set(2u, dv.value);
  return res;
}

}  // namespace

void RegisterAttentionBindings(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "attention", Attention);
  Export(env, exports, "attentionBackward", AttentionBackward);
}

}  // namespace tessera
