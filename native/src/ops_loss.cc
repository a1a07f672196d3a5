// Fused linear + cross-entropy. Tokens go in chunks: logits for a chunk ([C,V]) are formed,
// turned into (softmax - onehot) * gradScale in place, and consumed by the two gradient
// GEMMs before the next chunk, so the full [T,V] logits never exist.
#include <cmath>

#include "core/tensor.h"
#include "cpu/fast_math.h"
#include "cpu/gemm.h"
#include "cpu/parallel.h"

namespace tessera {
namespace {

// Turns a row of logits into (softmax - onehot(label)) * gradScale in place (when wantGrad)
// and returns the row's loss, lse - logit[label]. One exp per logit; sums in double.
template <class T>
TESSERA_INLINE double SoftmaxRowImpl(T* row, int64_t V, int32_t label, bool wantGrad, T gradScale) {
  T m = cpu::Max(row, V);
  T target = row[label];
  for (int64_t j = 0; j < V; ++j) row[j] = cpu::FastExp(row[j] - m);
  double s = cpu::Sum(row, V);
  double loss = double(m) + std::log(s) - double(target);
  if (wantGrad) {
    T k = static_cast<T>(double(gradScale) / s);
    for (int64_t j = 0; j < V; ++j) row[j] *= k;
    row[label] -= gradScale;
  }
  return loss;
}
TESSERA_SIMD_CLONES double SoftmaxRow(float* row, int64_t V, int32_t label, bool wantGrad, float gradScale) {
  return SoftmaxRowImpl<float>(row, V, label, wantGrad, gradScale);
}
TESSERA_SIMD_CLONES double SoftmaxRow(double* row, int64_t V, int32_t label, bool wantGrad, double gradScale) {
  return SoftmaxRowImpl<double>(row, V, label, wantGrad, gradScale);
}

// linearCrossEntropy(x[T,D], w[V,D], labels int32[T], ignoreIndex, chunkSize, gradScale, wantGrad)
//   -> [lossSum, count, dx?, dw?]
Napi::Value LinearCrossEntropy(const Napi::CallbackInfo& info) {
  TensorImpl& x = TensorArg(info, 0);
  TensorImpl& w = TensorArg(info, 1);
  TensorImpl& labels = TensorArg(info, 2);
  int64_t ignore = static_cast<int64_t>(NumberArg(info, 3));
  int64_t chunk = static_cast<int64_t>(NumberArg(info, 4));
  double gradScale = NumberArg(info, 5);
  bool wantGrad = BoolArg(info, 6);
  if (x.ndim() != 2 || w.ndim() != 2 || x.dim(1) != w.dim(1) || x.dtype != w.dtype || labels.dtype != DType::I32 ||
      labels.numel != x.dim(0)) {
    throw OpError("linearCrossEntropy: x must be [T,D], w [V,D], labels int32 [T]");
  }
  int64_t T = x.dim(0), D = x.dim(1), V = w.dim(0);
  const int32_t* lab = labels.data<int32_t>();
  int64_t count = 0;
  for (int64_t t = 0; t < T; ++t) {
    if (lab[t] == ignore) continue;
    if (lab[t] < 0 || lab[t] >= V) {
      throw OpError("linearCrossEntropy: label " + std::to_string(lab[t]) + " at position " + std::to_string(t) +
                    " is outside [0, " + std::to_string(V) + ") and not the ignore index");
    }
    ++count;
  }
  chunk = std::max<int64_t>(1, std::min(chunk, std::max<int64_t>(T, 1)));
  Napi::Array res = Napi::Array::New(info.Env(), wantGrad ? 4 : 2);
  Out dx{}, dw{};
  if (wantGrad) {
    dx = NewTensor(info.Env(), x.dtype, {T, D});
    dw = NewTensor(info.Env(), x.dtype, {V, D});
  }
  double lossSum = 0;
  DispatchFloat("linearCrossEntropy", x.dtype, [&](auto z) {
    using Tf = decltype(z);
    const Tf *xp = x.data<Tf>(), *wp = w.data<Tf>();
    if (wantGrad) std::memset(dw.t->data<Tf>(), 0, V * D * sizeof(Tf));
    std::vector<Tf> logits(static_cast<size_t>(chunk * V));
    std::vector<double> rowLoss(T, 0.0);
    for (int64_t c0 = 0; c0 < T; c0 += chunk) {
      int64_t C = std::min(chunk, T - c0);
      cpu::Gemm<Tf>(false, true, C, V, D, Tf(1), xp + c0 * D, D, wp, D, Tf(0), logits.data(), V);
      cpu::ParallelFor(C, 1, [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
          int64_t t = c0 + r;
          Tf* row = logits.data() + r * V;
          if (lab[t] == ignore) {
            if (wantGrad) std::fill(row, row + V, Tf(0));
            continue;
          }
          rowLoss[t] = SoftmaxRow(row, V, lab[t], wantGrad, static_cast<Tf>(gradScale));
        }
      });
      if (wantGrad) {
        cpu::Gemm<Tf>(false, false, C, D, V, Tf(1), logits.data(), V, wp, D, Tf(0), dx.t->data<Tf>() + c0 * D, D);
        cpu::Gemm<Tf>(true, false, V, D, C, Tf(1), logits.data(), V, xp + c0 * D, D, Tf(1), dw.t->data<Tf>(), D);
      }
    }
    for (int64_t t = 0; t < T; ++t) lossSum += rowLoss[t];
  });
  res.Set(0u, Napi::Number::New(info.Env(), lossSum));
  res.Set(1u, Napi::Number::New(info.Env(), static_cast<double>(count)));
  if (wantGrad) {
    res.Set(2u, dx.value);
    res.Set(3u, dw.value);
  }
  return res;
}

}  // namespace

void RegisterLossBindings(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "linearCrossEntropy", LinearCrossEntropy);
}

}  // namespace tessera
