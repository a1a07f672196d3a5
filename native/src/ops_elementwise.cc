// Matmul and the elementwise / reduction helpers. Shapes are validated by the TypeScript
// face (native/ops-*.ts); here only what a kernel needs to stay in bounds is rechecked.
#include <cmath>
#include <cstring>

#include "core/tensor.h"
#include "cpu/gemm.h"
#include "cpu/parallel.h"

namespace tessera {
namespace {

constexpr int64_t kGrain = 1 << 15;

void SameSize(const char* op, const TensorImpl& a, const TensorImpl& b) {
  if (a.numel != b.numel || a.dtype != b.dtype) throw OpError(std::string(op) + ": operands differ in size or dtype");
}

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  TensorImpl& a = TensorArg(info, 0);
  TensorImpl& b = TensorArg(info, 1);
  bool ta = BoolArg(info, 2), tb = BoolArg(info, 3);
  if (a.dtype != b.dtype || a.ndim() != b.ndim() || a.ndim() < 2 || a.ndim() > 3) {
    throw OpError("matmul: operands must be both 2-D or both 3-D of one dtype");
  }
  int64_t batch = a.ndim() == 3 ? a.dim(0) : 1;
  if (a.ndim() == 3 && b.dim(0) != batch) throw OpError("matmul: batch sizes differ");
  int64_t M = ta ? a.dim(-1) : a.dim(-2), K = ta ? a.dim(-2) : a.dim(-1);
  int64_t K2 = tb ? b.dim(-1) : b.dim(-2), N = tb ? b.dim(-2) : b.dim(-1);
  if (K != K2) throw OpError("matmul: inner dimensions differ");
  std::vector<int64_t> shape = a.ndim() == 3 ? std::vector<int64_t>{batch, M, N} : std::vector<int64_t>{M, N};
  Out out = NewTensor(info.Env(), a.dtype, shape);
  DispatchFloat("matmul", a.dtype, [&](auto z) {
    using T = decltype(z);
    for (int64_t i = 0; i < batch; ++i) {
      cpu::Gemm<T>(ta, tb, M, N, K, T(1), a.data<T>() + i * M * K, a.dim(-1), b.data<T>() + i * K * N, b.dim(-1), T(0),
                   out.t->data<T>() + i * M * N, N);
    }
  });
  return out.value;
}

template <class F>
Napi::Value Binary(const Napi::CallbackInfo& info, const char* op, F f) {
  TensorImpl& a = TensorArg(info, 0);
  TensorImpl& b = TensorArg(info, 1);
  SameSize(op, a, b);
  Out out = NewTensor(info.Env(), a.dtype, a.shape);
  DispatchFloat(op, a.dtype, [&](auto z) {
    using T = decltype(z);
    const T *x = a.data<T>(), *y = b.data<T>();
    T* o = out.t->data<T>();
    cpu::ParallelFor(a.numel, kGrain, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) o[i] = f(x[i], y[i]);
    });
  });
  return out.value;
}

Napi::Value Add(const Napi::CallbackInfo& info) {
  return Binary(info, "add", [](auto x, auto y) { return x + y; });
}
Napi::Value Mul(const Napi::CallbackInfo& info) {
  return Binary(info, "mul", [](auto x, auto y) { return x * y; });
}

Napi::Value Scale(const Napi::CallbackInfo& info) {
  TensorImpl& a = TensorArg(info, 0);
  double s = NumberArg(info, 1);
  Out out = NewTensor(info.Env(), a.dtype, a.shape);
  DispatchFloat("scale", a.dtype, [&](auto z) {
    using T = decltype(z);
    const T* x = a.data<T>();
    T* o = out.t->data<T>();
    T ts = static_cast<T>(s);
    cpu::ParallelFor(a.numel, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) o[i] = x[i] * ts;
    });
  });
  return out.value;
}

Napi::Value ScaleInPlace(const Napi::CallbackInfo& info) {
  TensorImpl& a = TensorArg(info, 0);
  double s = NumberArg(info, 1);
  DispatchFloat("scaleInPlace", a.dtype, [&](auto z) {
    using T = decltype(z);
    T* x = a.data<T>();
    T ts = static_cast<T>(s);
    cpu::ParallelFor(a.numel, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) x[i] *= ts;
    });
  });
  return info.Env().Undefined();
}

Napi::Value AddInto(const Napi::CallbackInfo& info) {
  TensorImpl& d = TensorArg(info, 0);
  TensorImpl& s = TensorArg(info, 1);
  double alpha = NumberArg(info, 2);
  SameSize("addInto", d, s);
  DispatchFloat("addInto", d.dtype, [&](auto z) {
    using T = decltype(z);
    T* x = d.data<T>();
    const T* y = s.data<T>();
    T ta = static_cast<T>(alpha);
    cpu::ParallelFor(d.numel, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) x[i] += ta * y[i];
    });
  });
  return info.Env().Undefined();
}

Napi::Value AddBias(const Napi::CallbackInfo& info) {
  TensorImpl& x = TensorArg(info, 0);
  TensorImpl& bias = TensorArg(info, 1);
  if (x.dtype != bias.dtype || x.ndim() < 1 || x.dim(-1) != bias.numel) throw OpError("addBias: bias must be [N] for x[..., N]");
  Out out = NewTensor(info.Env(), x.dtype, x.shape);
  int64_t N = bias.numel, rows = N ? x.numel / N : 0;
  DispatchFloat("addBias", x.dtype, [&](auto z) {
    using T = decltype(z);
    const T *xp = x.data<T>(), *bp = bias.data<T>();
    T* o = out.t->data<T>();
    cpu::ParallelFor(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(N, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r)
        for (int64_t j = 0; j < N; ++j) o[r * N + j] = xp[r * N + j] + bp[j];
    });
  });
  return out.value;
}

// copyColumns(one [R, W], parts [R, w_i][], split, op): one's columns out to the parts side by
// side (split), or the parts into one; errors name op.
Napi::Value CopyColumns(const Napi::CallbackInfo& info) {
  TensorImpl& one = TensorArg(info, 0);
  std::vector<TensorImpl*> parts = ColumnPartsArg(info, 1, one, info[3].As<Napi::String>().Utf8Value());
  bool split = BoolArg(info, 2);
  const size_t e = DTypeSize(one.dtype), W = static_cast<size_t>(one.dim(1)) * e;
  cpu::ParallelFor(one.dim(0), std::max<int64_t>(1, kGrain / std::max<int64_t>(one.dim(1), 1)), [&](int64_t b, int64_t end) {
    for (int64_t r = b; r < end; ++r) {
      char* row = one.data<char>() + r * W;
      for (TensorImpl* p : parts) {
        const size_t w = static_cast<size_t>(p->dim(1)) * e;
        char* prow = p->data<char>() + r * w;
        if (split) std::memcpy(prow, row, w);
        else std::memcpy(row, prow, w);
        row += w;
      }
    }
  });
  return info.Env().Undefined();
}

// Column sums of dy[rows, N], in double; each task owns a column range so the result does not
// depend on the thread count.
Napi::Value SumRows(const Napi::CallbackInfo& info) {
  TensorImpl& dy = TensorArg(info, 0);
  if (dy.ndim() < 1) throw OpError("sumRows: dy must have at least one dimension");
  int64_t N = dy.dim(-1), rows = N ? dy.numel / N : 0;
  Out out = NewTensor(info.Env(), dy.dtype, {N});
  DispatchFloat("sumRows", dy.dtype, [&](auto z) {
    using T = decltype(z);
    const T* d = dy.data<T>();
    T* o = out.t->data<T>();
    cpu::ParallelFor(N, 64, [&](int64_t b, int64_t e) {
      std::vector<double> acc(e - b, 0.0);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = b; j < e; ++j) acc[j - b] += d[r * N + j];
      for (int64_t j = b; j < e; ++j) o[j] = static_cast<T>(acc[j - b]);
    });
  });
  return out.value;
}

Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  TensorImpl& t = TensorArg(info, 0);
  double total = 0;
  DispatchFloat("sumSquares", t.dtype, [&](auto z) {
    using T = decltype(z);
    const T* x = t.data<T>();
    constexpr int64_t kBlock = 1 << 16;
    int64_t blocks = (t.numel + kBlock - 1) / kBlock;
    std::vector<double> partial(blocks, 0.0);
    cpu::ParallelFor(blocks, 1, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        double s = 0;
        for (int64_t i = k * kBlock; i < std::min(t.numel, (k + 1) * kBlock); ++i) s += double(x[i]) * double(x[i]);
        partial[k] = s;
      }
    });
    for (double p : partial) total += p;
  });
  return Napi::Number::New(info.Env(), total);
}

}  // namespace

void RegisterElementwiseBindings(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "matmul", Matmul);
  Export(env, exports, "add", Add);
  Export(env, exports, "mul", Mul);
  Export(env, exports, "scale", Scale);
  Export(env, exports, "scaleInPlace", ScaleInPlace);
  Export(env, exports, "addInto", AddInto);
  Export(env, exports, "addBias", AddBias);
  Export(env, exports, "sumRows", SumRows);
  Export(env, exports, "copyColumns", CopyColumns);
  exports.Set("maxColumnParts", Napi::Number::New(env, kMaxColumnParts));
  Export(env, exports, "sumSquares", SumSquares);
}

}  // namespace tessera
