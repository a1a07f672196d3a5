// The fused linear cross-entropy on cuda: chunked over tokens so the [T,V] logits never exist.
// Per chunk of C tokens: logits = x_c w^T (GEMM), the row kernel's loss and in-place gradient
// (cross_entropy.cu), then dx_c = dlogits w and dw += dlogits^T x_c, the latter into fp32 with
// beta 1 (the weight gradient of the lm head sums over every chunk). Losses and counts stay on
// the device until the end: one wait per call, which also reads the bad-label flag.
//
// A vocabulary that is not a multiple of kVocabAlign (151,669 for Qwen's tokenizer, 50,257 for
// GPT-2's) would give the GEMMs rows of odd length: no 16-byte alignment, and cuBLASLt falls to
// kernels ~6x slower (the 1.5B step's loss took 100 ms instead of 17.5). Such a head runs padded:
// a copy of w with zero rows up to Vp, logits rows of Vp (the pad masked in the row kernel, its
// gradient 0), and dw summed into a [Vp, D] scratch whose first V rows are copied out at the end.
#include "core/tensor.h"
#include "cuda/kernels.h"
#include "cuda/runtime.h"

namespace tessera {
namespace {

using cuda::Scratch;

constexpr int64_t kVocabAlign = 64;

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
    const int64_t Vp = (V + kVocabAlign - 1) / kVocabAlign * kVocabAlign;
    const bool padded = Vp != V;
    Scratch wPad(padded ? static_cast<size_t>(Vp * D) * es : 0);
    Scratch dwPad(padded && wantGrad ? static_cast<size_t>(Vp * D) * sizeof(float) : 0);
    if (padded) {
      TESSERA_CUDA_CHECK(op, cudaMemcpyAsync(wPad.as<void>(), w.data<void>(), V * D * es, cudaMemcpyDeviceToDevice, s));
      TESSERA_CUDA_CHECK(op, cudaMemsetAsync(wPad.as<char>() + V * D * es, 0, (Vp - V) * D * es, s));
    }
    const void* wp = padded ? wPad.as<void>() : w.data<void>();
    float* dwp = !wantGrad ? nullptr : padded ? dwPad.as<float>() : dw.t->data<float>();
    Scratch logits(static_cast<size_t>(chunk * Vp) * es);
    Scratch rowLoss(T * sizeof(double));
    Scratch counted(T * sizeof(int));
    const char* xp = x.data<char>();
    const int32_t* lab = labels.data<int32_t>();
    for (int64_t c0 = 0; c0 < T; c0 += chunk) {
      const int64_t C = std::min(chunk, T - c0);
      void* lg = logits.as<void>();
      cuda::Gemm(dt, xp + c0 * D * es, wp, dt, lg, 0.f, nullptr, 1, C, Vp, D, false, true, false);
      cuda::CrossEntropyRows(dt, lg, lab + c0, rowLoss.as<double>() + c0, counted.as<int>() + c0, C, V, Vp, ignore, gradScale,
                             wantGrad, &dev->bad);
      if (!wantGrad) continue;
      cuda::Gemm(dt, lg, wp, dt, dx.t->data<char>() + c0 * D * es, 0.f, nullptr, 1, C, D, Vp, false, false, false);
      cuda::Gemm(dt, lg, xp + c0 * D * es, DType::F32, dwp, c0 == 0 ? 0.f : 1.f, nullptr, 1, Vp, D, C, true, false, false);
    }
    if (padded && wantGrad) {
      TESSERA_CUDA_CHECK(op, cudaMemcpyAsync(dw.t->data<float>(), dwp, V * D * sizeof(float), cudaMemcpyDeviceToDevice, s));
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
