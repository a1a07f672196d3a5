// The fused linear cross-entropy on cuda: chunked over tokens so the [T,V] logits never exist.
// Per chunk of C tokens: logits = x_c w^T (GEMM), the row kernel's loss and in-place gradient
// (cross_entropy.cu), then dx_c = dlogits w and dw += dlogits^T x_c, the latter into fp32 with
// beta 1 (the weight gradient of the lm head sums over every chunk). Losses and counts stay on
// the device until the end: one wait per call, which also reads the bad-label flag.
#include "core/tensor.h"
#include "cuda/kernels.h"
#include "cuda/runtime.h"

namespace tessera {
namespace {

using cuda::Scratch;

// linearCrossEntropy(x[T,D], w[V,D], labels int32[T], ignoreIndex, chunkSize, gradScale, wantGrad)
//   -> [lossSum, count, dx (x's dtype)?, dw float32?]
Napi::Value LinearCrossEntropy(const Napi::CallbackInfo& info) {
  const char* op = "linearCrossEntropy";
  TensorImpl& x = CudaTensorArg(info, 0);
  TensorImpl& w = CudaTensorArg(info, 1);
  TensorImpl& labels = CudaTensorArg(info, 2);
  int64_t ignore = static_cast<int64_t>(NumberArg(info, 3));
  int64_t chunk = static_cast<int64_t>(NumberArg(info, 4));
  float gradScale = static_cast<float>(NumberArg(info, 5));
  bool wantGrad = BoolArg(info, 6);
  if ((x.dtype != DType::F32 && x.dtype != DType::BF16) || x.ndim() != 2 || w.ndim() != 2 || x.dim(1) != w.dim(1) ||
      x.dtype != w.dtype || labels.dtype != DType::I32 || labels.numel != x.dim(0)) {
    throw OpError("linearCrossEntropy: x must be [T,D], w [V,D] (float32 or bfloat16), labels int32 [T]");
  }
  const int64_t T = x.dim(0), D = x.dim(1), V = w.dim(0);
  if (V == 0) throw OpError("linearCrossEntropy: w has no rows (an empty vocabulary)");
  const DType dt = x.dtype;
  const size_t es = DTypeSize(dt);
  chunk = std::max<int64_t>(1, std::min(chunk, std::max<int64_t>(T, 1)));
  cudaStream_t s = cuda::ComputeStream();

  Out dx{}, dw{};
  if (wantGrad) {
    dx = NewTensor(info.Env(), dt, {T, D}, Device::CUDA);
    dw = NewTensor(info.Env(), DType::F32, {V, D}, Device::CUDA);
  }
  // [lossSum, count] as doubles, then the bad-label flag: read back in one copy.
  struct Totals {
    double loss, count;
    int bad;
  };
  Scratch totals(sizeof(Totals));
  Totals* dev = totals.as<Totals>();
  TESSERA_CUDA_CHECK(op, cudaMemsetAsync(dev, 0, sizeof(Totals), s));
  if (wantGrad && (T == 0 || D == 0)) TESSERA_CUDA_CHECK(op, cudaMemsetAsync(dw.t->data<float>(), 0, V * D * sizeof(float), s));
  if (T > 0 && V > 0) {
    Scratch logits(static_cast<size_t>(chunk * V) * es);
    Scratch rowLoss(T * sizeof(double));
    Scratch counted(T * sizeof(int));
    const char* xp = x.data<char>();
    const int32_t* lab = labels.data<int32_t>();
    for (int64_t c0 = 0; c0 < T; c0 += chunk) {
      const int64_t C = std::min(chunk, T - c0);
      void* lg = logits.as<void>();
      cuda::Gemm(dt, xp + c0 * D * es, w.data<void>(), dt, lg, 0.f, nullptr, 1, C, V, D, false, true, false);
      cuda::CrossEntropyRows(dt, lg, lab + c0, rowLoss.as<double>() + c0, counted.as<int>() + c0, C, V, ignore, gradScale,
                             wantGrad, &dev->bad);
      if (!wantGrad) continue;
      cuda::Gemm(dt, lg, w.data<void>(), dt, dx.t->data<char>() + c0 * D * es, 0.f, nullptr, 1, C, D, V, false, false, false);
      cuda::Gemm(dt, lg, xp + c0 * D * es, DType::F32, dw.t->data<void>(), c0 == 0 ? 0.f : 1.f, nullptr, 1, V, D, C, true, false,
                 false);
    }
    cuda::CrossEntropyTotals(rowLoss.as<double>(), counted.as<int>(), T, &dev->loss);
  }
  Totals host{};
  DeviceCopy(op, &host, Device::CPU, dev, Device::CUDA, sizeof(Totals));
  if (host.bad) {
    throw OpError("linearCrossEntropy: a label is outside [0, " + std::to_string(V) + ") and not the ignore index " +
                  std::to_string(ignore));
  }
  Napi::Array res = Napi::Array::New(info.Env(), wantGrad ? 4 : 2);
  res.Set(0u, Napi::Number::New(info.Env(), host.loss));
  res.Set(1u, Napi::Number::New(info.Env(), host.count));
  if (wantGrad) {
    res.Set(2u, dx.value);
    res.Set(3u, dw.value);
  }
  return res;
}

}  // namespace

void RegisterCudaLossBindings(Napi::Env env, Napi::Object cuda) {
  Export(env, cuda, "linearCrossEntropy", LinearCrossEntropy);
}

}  // namespace tessera
