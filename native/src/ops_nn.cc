// Row-wise layers: embedding, RMSNorm, LayerNorm, RoPE, SwiGLU, GELU (tanh), softmax;
// forward and backward. Reductions along a row accumulate in double; parameter gradients
// are reduced over rows by tasks that each own a column range (deterministic for any
// thread count).
#include <cmath>

#include "core/rope_table.h"
#include "core/tensor.h"
#include "cpu/fast_math.h"
#include "cpu/parallel.h"

namespace tessera {
namespace {

constexpr int64_t kGrain = 1 << 15;

int64_t RowGrain(int64_t width) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(width, 1)); }

// Parameter gradients summed over rows: rows go in fixed chunks (sized from R alone, so the
// result does not depend on the thread count); each chunk adds its rows into its own double
// partial [D], then the partials are summed in chunk order.
struct RowChunks {
  int64_t rows, perChunk, count;
  explicit RowChunks(int64_t R) : rows(R), perChunk(std::max<int64_t>(32, (R + 255) / 256)), count((R + perChunk - 1) / perChunk) {}
};

// out[k][j] = sum over chunks of partial[c][k][j], for `outs` outputs of width D.
template <class T>
void SumPartials(const std::vector<double>& partial, int64_t chunks, int outs, int64_t D, T* const* out) {
  cpu::ParallelFor(D, 256, [&](int64_t b, int64_t e) {
    for (int k = 0; k < outs; ++k)
      for (int64_t j = b; j < e; ++j) {
        double s = 0;
        for (int64_t c = 0; c < chunks; ++c) s += partial[(c * outs + k) * D + j];
        out[k][j] = static_cast<T>(s);
      }
  });
}

void NeedFloatPair(const char* op, const TensorImpl& a, const TensorImpl& b) {
  if (a.dtype != b.dtype) throw OpError(std::string(op) + ": dtypes differ");
}

// ---------------------------------------------------------------- embedding

Napi::Value Embedding(const Napi::CallbackInfo& info) {
  TensorImpl& w = TensorArg(info, 0);
  TensorImpl& ids = TensorArg(info, 1);
  if (ids.dtype != DType::I32 || w.ndim() != 2) throw OpError("embedding: weight must be [V,D] and ids int32");
  int64_t V = w.dim(0), D = w.dim(1), T = ids.numel;
  const int32_t* id = ids.data<int32_t>();
  for (int64_t t = 0; t < T; ++t) {
    if (id[t] < 0 || id[t] >= V) {
      throw OpError("embedding: id " + std::to_string(id[t]) + " at position " + std::to_string(t) +
                    " is out of range [0, " + std::to_string(V) + ")");
    }
  }
  Out out = NewTensor(info.Env(), w.dtype, {T, D});
  size_t rowBytes = D * DTypeSize(w.dtype);
  const char* src = w.data<char>();
  char* dst = out.t->data<char>();
  cpu::ParallelFor(T, RowGrain(D), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) std::memcpy(dst + t * rowBytes, src + id[t] * rowBytes, rowBytes);
  });
  return out.value;
}

Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  TensorImpl& dy = TensorArg(info, 0);
  TensorImpl& ids = TensorArg(info, 1);
  int64_t V = static_cast<int64_t>(NumberArg(info, 2));
  if (ids.dtype != DType::I32 || dy.ndim() != 2 || dy.dim(0) != ids.numel) {
    throw OpError("embeddingBackward: dy must be [T,D] and ids int32 [T]");
  }
  int64_t T = dy.dim(0), D = dy.dim(1);
  const int32_t* id = ids.data<int32_t>();
  for (int64_t t = 0; t < T; ++t) {
    if (id[t] < 0 || id[t] >= V) throw OpError("embeddingBackward: id " + std::to_string(id[t]) + " out of range");
  }
  Out out = NewTensor(info.Env(), dy.dtype, {V, D});
  DispatchFloat("embeddingBackward", dy.dtype, [&](auto z) {
    using T_ = decltype(z);
    T_* dw = out.t->data<T_>();
    const T_* g = dy.data<T_>();
    std::memset(dw, 0, V * D * sizeof(T_));
    cpu::ParallelFor(D, 16, [&](int64_t b, int64_t e) {
      for (int64_t t = 0; t < T; ++t) {
        T_* row = dw + id[t] * D;
        const T_* gr = g + t * D;
        for (int64_t j = b; j < e; ++j) row[j] += gr[j];
      }
    });
  });
  return out.value;
}

// ---------------------------------------------------------------- RMSNorm

Napi::Value Rmsnorm(const Napi::CallbackInfo& info) {
  TensorImpl& x = TensorArg(info, 0);
  TensorImpl& w = TensorArg(info, 1);
  double eps = NumberArg(info, 2);
  NeedFloatPair("rmsnorm", x, w);
  int64_t D = w.numel, R = D ? x.numel / D : 0;
  Out y = NewTensor(info.Env(), x.dtype, x.shape);
  Out rstd = NewTensor(info.Env(), x.dtype, {R});
  DispatchFloat("rmsnorm", x.dtype, [&](auto z) {
    using T = decltype(z);
    const T *xp = x.data<T>(), *wp = w.data<T>();
    T *yp = y.t->data<T>(), *rp = rstd.t->data<T>();
    cpu::ParallelFor(R, RowGrain(D), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* xr = xp + r * D;
        double ss = cpu::Dot(xr, xr, D);
        T rs = static_cast<T>(1.0 / std::sqrt(ss / D + eps));
        rp[r] = rs;
        T* yr = yp + r * D;
        for (int64_t j = 0; j < D; ++j) yr[j] = xr[j] * rs * wp[j];
      }
    });
  });
  Napi::Array res = Napi::Array::New(info.Env(), 2);
  res.Set(0u, y.value);
  res.Set(1u, rstd.value);
  return res;
}

// dx = rstd * (g - x * rstd^2 * mean(g * x)), g = dy * w;  dw = sum_rows dy * x * rstd.
Napi::Value RmsnormBackward(const Napi::CallbackInfo& info) {
  TensorImpl& dy = TensorArg(info, 0);
  TensorImpl& x = TensorArg(info, 1);
  TensorImpl& w = TensorArg(info, 2);
  TensorImpl& rstd = TensorArg(info, 3);
  int64_t D = w.numel, R = D ? x.numel / D : 0;
  if (dy.numel != x.numel || rstd.numel != R) throw OpError("rmsnormBackward: sizes differ");
  Out dx = NewTensor(info.Env(), x.dtype, x.shape);
  Out dw = NewTensor(info.Env(), x.dtype, {D});
  DispatchFloat("rmsnormBackward", x.dtype, [&](auto z) {
    using T = decltype(z);
    const T *g = dy.data<T>(), *xp = x.data<T>(), *wp = w.data<T>(), *rp = rstd.data<T>();
    T *dxp = dx.t->data<T>(), *dwp = dw.t->data<T>();
    RowChunks rc(R);
    std::vector<double> partial(rc.count * D, 0.0);
    cpu::ParallelFor(rc.count, 1, [&](int64_t cb, int64_t ce) {
      for (int64_t c = cb; c < ce; ++c) {
        double* pw = partial.data() + c * D;
        for (int64_t r = c * rc.perChunk; r < std::min(R, (c + 1) * rc.perChunk); ++r) {
          const T *gr = g + r * D, *xr = xp + r * D;
          T* o = dxp + r * D;
          for (int64_t j = 0; j < D; ++j) o[j] = gr[j] * wp[j];  // g = dy * w, staged in dx
          double dot = cpu::Dot(o, xr, D);
          double rs = rp[r];
          T c3 = static_cast<T>(rs * rs * rs * dot / D);
          T rsT = static_cast<T>(rs);
          for (int64_t j = 0; j < D; ++j) {
            pw[j] += double(gr[j] * xr[j]) * rs;
            o[j] = rsT * o[j] - c3 * xr[j];
          }
        }
      }
    });
    T* outs[1] = {dwp};
    SumPartials<T>(partial, rc.count, 1, D, outs);
  });
  Napi::Array res = Napi::Array::New(info.Env(), 2);
  res.Set(0u, dx.value);
  res.Set(1u, dw.value);
  return res;
}

// ---------------------------------------------------------------- LayerNorm

Napi::Value Layernorm(const Napi::CallbackInfo& info) {
  TensorImpl& x = TensorArg(info, 0);
  TensorImpl& w = TensorArg(info, 1);
  TensorImpl& bias = TensorArg(info, 2);
  double eps = NumberArg(info, 3);
  int64_t D = w.numel, R = D ? x.numel / D : 0;
  Out y = NewTensor(info.Env(), x.dtype, x.shape);
  Out mean = NewTensor(info.Env(), x.dtype, {R});
  Out rstd = NewTensor(info.Env(), x.dtype, {R});
  DispatchFloat("layernorm", x.dtype, [&](auto z) {
    using T = decltype(z);
    const T *xp = x.data<T>(), *wp = w.data<T>(), *bp = bias.data<T>();
    T *yp = y.t->data<T>(), *mp = mean.t->data<T>(), *rp = rstd.t->data<T>();
    cpu::ParallelFor(R, RowGrain(D), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* xr = xp + r * D;
        double s = 0;
        for (int64_t j = 0; j < D; ++j) s += xr[j];
        double mu = s / D, var = 0;
        for (int64_t j = 0; j < D; ++j) var += (xr[j] - mu) * (xr[j] - mu);
        double rs = 1.0 / std::sqrt(var / D + eps);
        mp[r] = static_cast<T>(mu);
        rp[r] = static_cast<T>(rs);
        T* yr = yp + r * D;
        for (int64_t j = 0; j < D; ++j) yr[j] = static_cast<T>((xr[j] - mu) * rs) * wp[j] + bp[j];
      }
    });
  });
  Napi::Array res = Napi::Array::New(info.Env(), 3);
  res.Set(0u, y.value);
  res.Set(1u, mean.value);
  res.Set(2u, rstd.value);
  return res;
}

// xhat = (x - mean) * rstd, g = dy * w: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
Napi::Value LayernormBackward(const Napi::CallbackInfo& info) {
  TensorImpl& dy = TensorArg(info, 0);
  TensorImpl& x = TensorArg(info, 1);
  TensorImpl& w = TensorArg(info, 2);
  TensorImpl& mean = TensorArg(info, 3);
  TensorImpl& rstd = TensorArg(info, 4);
  int64_t D = w.numel, R = D ? x.numel / D : 0;
  if (dy.numel != x.numel || rstd.numel != R || mean.numel != R) throw OpError("layernormBackward: sizes differ");
  Out dx = NewTensor(info.Env(), x.dtype, x.shape);
  Out dw = NewTensor(info.Env(), x.dtype, {D});
  Out db = NewTensor(info.Env(), x.dtype, {D});
  DispatchFloat("layernormBackward", x.dtype, [&](auto z) {
    using T = decltype(z);
    const T *g = dy.data<T>(), *xp = x.data<T>(), *wp = w.data<T>(), *mp = mean.data<T>(), *rp = rstd.data<T>();
    T *dxp = dx.t->data<T>(), *dwp = dw.t->data<T>(), *dbp = db.t->data<T>();
    RowChunks rc(R);
    std::vector<double> partial(rc.count * 2 * D, 0.0);
    cpu::ParallelFor(rc.count, 1, [&](int64_t cb, int64_t ce) {
      for (int64_t c = cb; c < ce; ++c) {
        double* pw = partial.data() + c * 2 * D;
        double* pb = pw + D;
        for (int64_t r = c * rc.perChunk; r < std::min(R, (c + 1) * rc.perChunk); ++r) {
          const T *gr = g + r * D, *xr = xp + r * D;
          double mu = mp[r], rs = rp[r], sg = 0, sgx = 0;
          for (int64_t j = 0; j < D; ++j) {
            double xh = (xr[j] - mu) * rs;
            double gw = double(gr[j]) * wp[j];
            sg += gw;
            sgx += gw * xh;
            pw[j] += double(gr[j]) * xh;
            pb[j] += gr[j];
          }
          sg /= D;
          sgx /= D;
          T* o = dxp + r * D;
          for (int64_t j = 0; j < D; ++j) {
            double xh = (xr[j] - mu) * rs;
            o[j] = static_cast<T>(rs * (double(gr[j]) * wp[j] - sg - xh * sgx));
          }
        }
      }
    });
    T* outs[2] = {dwp, dbp};
    SumPartials<T>(partial, rc.count, 2, D, outs);
  });
  Napi::Array res = Napi::Array::New(info.Env(), 3);
  res.Set(0u, dx.value);
  res.Set(1u, dw.value);
  res.Set(2u, db.value);
  return res;
}

// ---------------------------------------------------------------- RoPE

// rope(x[T,H,Dh], positions[T], invFreq[Dh/2] (Float64Array), attentionScaling, inverse).
// HF rotate_half pairs (i, i + Dh/2). For float32 the angle is formed in float32 from the
// float32 inv_freq, as transformers does, so results match it; float64 stays in double.
// The inverse rotation (angle -> -angle) is the backward.
Napi::Value Rope(const Napi::CallbackInfo& info) {
  TensorImpl& x = TensorArg(info, 0);
  TensorImpl& pos = TensorArg(info, 1);
  const std::vector<double> freq = InvFreqArg<double>(info, 2, "rope");
  double attnScale = NumberArg(info, 3);
  bool inverse = BoolArg(info, 4);
  if (x.ndim() != 3 || pos.dtype != DType::I32 || pos.numel != x.dim(0)) {
    throw OpError("rope: x must be [T,H,Dh] with int32 positions[T]");
  }
  int64_t T = x.dim(0), H = x.dim(1), Dh = x.dim(2), half = Dh / 2;
  if (Dh % 2 != 0 || static_cast<int64_t>(freq.size()) != half) {
    throw OpError("rope: head dim must be even and invFreq hold Dh/2 entries");
  }
  Out y = NewTensor(info.Env(), x.dtype, x.shape);
  const int32_t* p = pos.data<int32_t>();
  DispatchFloat(inverse ? "ropeBackward" : "rope", x.dtype, [&](auto z) {
    using Tf = decltype(z);
    const Tf* xp = x.data<Tf>();
    Tf* yp = y.t->data<Tf>();
    std::vector<Tf> f(half);
    for (int64_t i = 0; i < half; ++i) f[i] = static_cast<Tf>(freq[i]);
    cpu::ParallelFor(T, RowGrain(H * Dh), [&](int64_t b, int64_t e) {
      std::vector<Tf> c(half), s(half);
      for (int64_t t = b; t < e; ++t) {
        Tf pt = static_cast<Tf>(p[t]);
        for (int64_t i = 0; i < half; ++i) {
          Tf ang = pt * f[i];
          c[i] = static_cast<Tf>(std::cos(ang) * attnScale);
          s[i] = static_cast<Tf>(std::sin(ang) * attnScale) * (inverse ? Tf(-1) : Tf(1));
        }
        for (int64_t h = 0; h < H; ++h) {
          const Tf* xr = xp + (t * H + h) * Dh;
          Tf* yr = yp + (t * H + h) * Dh;
          for (int64_t i = 0; i < half; ++i) {
            Tf a = xr[i], bb = xr[i + half];
            yr[i] = a * c[i] - bb * s[i];
            yr[i + half] = bb * c[i] + a * s[i];
          }
        }
      }
    });
  });
  return y.value;
}

// ropeTable(positions[T], invFreq[half] (Float64Array), attentionScaling, dtype) -> [T, 2, half]:
// each token's cos row then sin row, times the scaling, for ropeWithTable (a batch's layers share
// one). A float32 table takes the angle as rope's float32 product, its cos / sin in double, rounded
// once (rope's own values within fp32 rounding); a float64 one is rope's float64 values exactly.
Napi::Value RopeTable(const Napi::CallbackInfo& info) {
  TensorImpl& pos = TensorArg(info, 0);
  if (pos.dtype != DType::I32 || pos.ndim() != 1) throw OpError("ropeTable: positions must be int32 [T]");
  const std::vector<double> freq = InvFreqArg<double>(info, 1, "ropeTable");
  const double attnScale = NumberArg(info, 2);
  const DType dt = static_cast<DType>(static_cast<int>(NumberArg(info, 3)));
  const int64_t T = pos.numel, half = static_cast<int64_t>(freq.size());
  const int32_t* p = pos.data<int32_t>();
  Out table{};
  DispatchFloat("ropeTable", dt, [&](auto z) {
    using Tf = decltype(z);
    table = NewTensor(info.Env(), dt, {T, 2, half});
    Tf* out = table.t->data<Tf>();
    std::vector<Tf> f(half);
    for (int64_t i = 0; i < half; ++i) f[i] = static_cast<Tf>(freq[i]);
    cpu::ParallelFor(T, RowGrain(2 * half), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const Tf pt = static_cast<Tf>(p[t]);
        Tf* row = out + t * 2 * half;
        for (int64_t i = 0; i < half; ++i) {
          const double ang = static_cast<double>(pt * f[i]);
          row[i] = static_cast<Tf>(std::cos(ang) * attnScale);
          row[half + i] = static_cast<Tf>(std::sin(ang) * attnScale);
        }
      }
    });
  });
  return table.value;
}

// ropeWithTable(x[T,H,Dh], table[T, 2, Dh/2] of x's dtype, inverse): rope with cos / sin read from
// the table.
Napi::Value RopeWithTable(const Napi::CallbackInfo& info) {
  TensorImpl& x = TensorArg(info, 0);
  TensorImpl& table = TensorArg(info, 1);
  const bool inverse = BoolArg(info, 2);
  const char* op = inverse ? "ropeBackwardWithTable" : "ropeWithTable";
  CheckRopeTable(op, x, table, x.dtype, "[T,2,Dh/2] of x's dtype");
  const int64_t T = x.dim(0), H = x.dim(1), Dh = x.dim(2), half = Dh / 2;
  Out y = NewTensor(info.Env(), x.dtype, x.shape);
  DispatchFloat(op, x.dtype, [&](auto z) {
    using Tf = decltype(z);
    const Tf* xp = x.data<Tf>();
    const Tf* tp = table.data<Tf>();
    Tf* yp = y.t->data<Tf>();
    const Tf sign = inverse ? Tf(-1) : Tf(1);
    cpu::ParallelFor(T, RowGrain(H * Dh), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const Tf* c = tp + t * 2 * half;
        const Tf* s = c + half;
        for (int64_t h = 0; h < H; ++h) {
          const Tf* xr = xp + (t * H + h) * Dh;
          Tf* yr = yp + (t * H + h) * Dh;
          for (int64_t i = 0; i < half; ++i) {
            const Tf a = xr[i], bb = xr[i + half], si = s[i] * sign;
            yr[i] = a * c[i] - bb * si;
            yr[i + half] = bb * c[i] + a * si;
          }
        }
      }
    });
  });
  return y.value;
}

// ---------------------------------------------------------------- activations

// The activations' loops are compute-bound (exp, division), so each has a range function
// compiled per ISA (TESSERA_SIMD_CLONES); ParallelFor hands it contiguous ranges.
constexpr double kSqrt2OverPi = 0.7978845608028654;

template <class T>
TESSERA_INLINE void SwigluImpl(const T* g, const T* u, T* h, int64_t n) {
  for (int64_t i = 0; i < n; ++i) h[i] = g[i] * cpu::FastSigmoid(g[i]) * u[i];
}
template <class T>
TESSERA_INLINE void SwigluBackwardImpl(const T* d, const T* g, const T* u, T* dg, T* du, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T s = cpu::FastSigmoid(g[i]);
    du[i] = d[i] * g[i] * s;
    dg[i] = d[i] * u[i] * s * (T(1) + g[i] * (T(1) - s));
  }
}
template <class T>
TESSERA_INLINE void GeluImpl(const T* x, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T v = x[i];
    y[i] = T(0.5) * v * (T(1) + cpu::FastTanh(T(kSqrt2OverPi) * (v + T(0.044715) * v * v * v)));
  }
}
template <class T>
TESSERA_INLINE void GeluBackwardImpl(const T* dy, const T* x, T* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T v = x[i];
    T th = cpu::FastTanh(T(kSqrt2OverPi) * (v + T(0.044715) * v * v * v));
    T du = T(kSqrt2OverPi) * (T(1) + T(3 * 0.044715) * v * v);
    dx[i] = dy[i] * (T(0.5) * (T(1) + th) + T(0.5) * v * (T(1) - th * th) * du);
  }
}

#define TESSERA_RANGE_CLONES(NAME, IMPL, PARAMS, ARGS)              \
  TESSERA_SIMD_CLONES void NAME PARAMS(float) { IMPL<float> ARGS; } \
  TESSERA_SIMD_CLONES void NAME PARAMS(double) { IMPL<double> ARGS; }
#define TESSERA_P2(T) (const T* a, const T* b, T* y, int64_t n)
#define TESSERA_P1(T) (const T* a, T* y, int64_t n)
#define TESSERA_P3(T) (const T* a, const T* b, const T* c, T* y, T* z, int64_t n)
TESSERA_RANGE_CLONES(SwigluRange, SwigluImpl, TESSERA_P2, (a, b, y, n))
TESSERA_RANGE_CLONES(GeluBackwardRange, GeluBackwardImpl, TESSERA_P2, (a, b, y, n))
TESSERA_RANGE_CLONES(GeluRange, GeluImpl, TESSERA_P1, (a, y, n))
TESSERA_RANGE_CLONES(SwigluBackwardRange, SwigluBackwardImpl, TESSERA_P3, (a, b, c, y, z, n))
#undef TESSERA_RANGE_CLONES
#undef TESSERA_P1
#undef TESSERA_P2
#undef TESSERA_P3

// Elementwise a (op) b through a range function, same size and dtype.
template <class F>
Napi::Value Pointwise2(const Napi::CallbackInfo& info, const char* op, F range) {
  TensorImpl& a = TensorArg(info, 0);
  TensorImpl& b = TensorArg(info, 1);
  if (a.numel != b.numel || a.dtype != b.dtype) throw OpError(std::string(op) + ": operands differ in size or dtype");
  Out y = NewTensor(info.Env(), b.dtype, b.shape);
  DispatchFloat(op, a.dtype, [&](auto z) {
    using T = decltype(z);
    cpu::ParallelFor(a.numel, kGrain, [&](int64_t s, int64_t e) {
      range(a.data<T>() + s, b.data<T>() + s, y.t->data<T>() + s, e - s);
    });
  });
  return y.value;
}

Napi::Value Swiglu(const Napi::CallbackInfo& info) {
  return Pointwise2(info, "swiglu", [](auto... p) { SwigluRange(p...); });
}

Napi::Value SwigluBackward(const Napi::CallbackInfo& info) {
  TensorImpl& dh = TensorArg(info, 0);
  TensorImpl& gate = TensorArg(info, 1);
  TensorImpl& up = TensorArg(info, 2);
  if (dh.numel != gate.numel || up.numel != gate.numel || dh.dtype != gate.dtype || up.dtype != gate.dtype) {
    throw OpError("swigluBackward: operands differ in size or dtype");
  }
  Out dg = NewTensor(info.Env(), gate.dtype, gate.shape);
  Out du = NewTensor(info.Env(), gate.dtype, gate.shape);
  DispatchFloat("swigluBackward", gate.dtype, [&](auto z) {
    using T = decltype(z);
    cpu::ParallelFor(gate.numel, kGrain, [&](int64_t b, int64_t e) {
      SwigluBackwardRange(dh.data<T>() + b, gate.data<T>() + b, up.data<T>() + b, dg.t->data<T>() + b,
                          du.t->data<T>() + b, e - b);
    });
  });
  Napi::Array res = Napi::Array::New(info.Env(), 2);
  res.Set(0u, dg.value);
  res.Set(1u, du.value);
  return res;
}

Napi::Value Gelu(const Napi::CallbackInfo& info) {
  TensorImpl& x = TensorArg(info, 0);
  Out y = NewTensor(info.Env(), x.dtype, x.shape);
  DispatchFloat("gelu", x.dtype, [&](auto z) {
    using T = decltype(z);
    cpu::ParallelFor(x.numel, kGrain, [&](int64_t b, int64_t e) { GeluRange(x.data<T>() + b, y.t->data<T>() + b, e - b); });
  });
  return y.value;
}

// geluBackward(dy, x): argument order (dy, x) as the range function's (a, b).
Napi::Value GeluBackward(const Napi::CallbackInfo& info) {
  return Pointwise2(info, "geluBackward", [](auto... p) { GeluBackwardRange(p...); });
}

Napi::Value Softmax(const Napi::CallbackInfo& info) {
  TensorImpl& x = TensorArg(info, 0);
  if (x.ndim() < 1) throw OpError("softmax: x must have at least one dimension");
  int64_t N = x.dim(-1), R = N ? x.numel / N : 0;
  Out y = NewTensor(info.Env(), x.dtype, x.shape);
  DispatchFloat("softmax", x.dtype, [&](auto z) {
    using T = decltype(z);
    const T* xp = x.data<T>();
    T* yp = y.t->data<T>();
    cpu::ParallelFor(R, RowGrain(N), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* xr = xp + r * N;
        T* yr = yp + r * N;
        T m = cpu::Max(xr, N);
        for (int64_t j = 0; j < N; ++j) yr[j] = cpu::FastExp(xr[j] - m);
        double s = cpu::Sum(yr, N);
        T inv = static_cast<T>(1.0 / s);
        for (int64_t j = 0; j < N; ++j) yr[j] *= inv;
      }
    });
  });
  return y.value;
}

// dx = y * (dy - sum(dy * y)).
Napi::Value SoftmaxBackward(const Napi::CallbackInfo& info) {
  TensorImpl& dy = TensorArg(info, 0);
  TensorImpl& y = TensorArg(info, 1);
  if (dy.numel != y.numel || dy.dtype != y.dtype || y.ndim() < 1) throw OpError("softmaxBackward: operands differ");
  int64_t N = y.dim(-1), R = N ? y.numel / N : 0;
  Out dx = NewTensor(info.Env(), y.dtype, y.shape);
  DispatchFloat("softmaxBackward", y.dtype, [&](auto z) {
    using T = decltype(z);
    const T *g = dy.data<T>(), *yp = y.data<T>();
    T* o = dx.t->data<T>();
    cpu::ParallelFor(R, RowGrain(N), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        T d = static_cast<T>(cpu::Dot(g + r * N, yp + r * N, N));
        for (int64_t j = 0; j < N; ++j) o[r * N + j] = yp[r * N + j] * (g[r * N + j] - d);
      }
    });
  });
  return dx.value;
}

}  // namespace

void RegisterNnBindings(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "embedding", Embedding);
  Export(env, exports, "embeddingBackward", EmbeddingBackward);
  Export(env, exports, "rmsnorm", Rmsnorm);
  Export(env, exports, "rmsnormBackward", RmsnormBackward);
  Export(env, exports, "layernorm", Layernorm);
  Export(env, exports, "layernormBackward", LayernormBackward);
  Export(env, exports, "rope", Rope);
  Export(env, exports, "ropeTable", RopeTable);
  Export(env, exports, "ropeWithTable", RopeWithTable);
  Export(env, exports, "swiglu", Swiglu);
  Export(env, exports, "swigluBackward", SwigluBackward);
  Export(env, exports, "gelu", Gelu);
  Export(env, exports, "geluBackward", GeluBackward);
  Export(env, exports, "softmax", Softmax);
  Export(env, exports, "softmaxBackward", SoftmaxBackward);
}

}  // namespace tessera
