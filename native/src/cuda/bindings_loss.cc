// The fused linear cross-entropy on cuda: chunked over tokens so the [T,V] logits never exist.
// Per chunk of C tokens: logits = x_c w^T (GEMM), the row kernel's loss and in-place gradient
// (cross_entropy.cu), then dx_c = dlogits w and dw += dlogits^T x_c, the latter into fp32 with
// beta 1 (the weight gradient of the lm head sums over every chunk). Losses and counts stay on
// the device until the end: one wait per call, which also reads the bad-label flag.
//
// A vocabulary that is not a multiple of kVocabAlign (151,669 for Qwen's tokenizer, 50,257 for
// GPT-2's) would give the logits rows of odd length: no 16-byte alignment, and cuBLASLt falls to
// kernels ~6x slower (the 1.5B step's loss took 100 ms instead of 17.5). Odd GEMM extents cost
// as much (the three GEMMs at V = 151,669 through an aligned row stride: 78 ms against 19). So
// the logits rows are Vp apart (V rounded up to kVocabAlign), and the head splits at Vd (V
// rounded down): rows [0, Vd) of w and dw take part as they are, through the logits' row
// stride, and the last partial block of kVocabAlign rows through a zero-padded copy of its
// rows (wTail) and a [kVocabAlign, D] dw scratch copied out at the end. Every GEMM extent is a
// multiple of kVocabAlign but the tokens' and D; the pad columns' logits are 0 and masked by the
// row kernel, their gradient 0.
#include "core/tensor.h"
#include "cuda/kernels.h"
#include "cuda/runtime.h"

namespace tessera {
namespace {

using cuda::Scratch;

constexpr int64_t kVocabAlign = 64;

// linearCrossEntropy(x[T,D], w[V,D], labels int32[T], ignoreIndex, chunkSize, gradScale, wantGrad, reference?)
//   -> [lossSum, count, dx (x's dtype)?, dw float32?]; `reference` takes the tiled GEMM over cuBLASLt (tests).
Napi::Value LinearCrossEntropy(const Napi::CallbackInfo& info) {
  const char* op = "linearCrossEntropy";
  TensorImpl& x = CudaTensorArg(info, 0);
  TensorImpl& w = CudaTensorArg(info, 1);
  TensorImpl& labels = CudaTensorArg(info, 2);
  int64_t ignore = static_cast<int64_t>(NumberArg(info, 3));
  int64_t chunk = static_cast<int64_t>(NumberArg(info, 4));
  float gradScale = static_cast<float>(NumberArg(info, 5));
  bool wantGrad = BoolArg(info, 6);
  bool reference = OptionalFlagArg(info, 7);
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
    const int64_t Vd = V / kVocabAlign * kVocabAlign, tail = V - Vd, Vp = Vd + (tail ? kVocabAlign : 0);
    const void* wp = w.data<void>();
    float* dwp = wantGrad ? dw.t->data<float>() : nullptr;
    Scratch wTail(tail ? static_cast<size_t>(kVocabAlign * D) * es : 0);
    Scratch dwTail(tail && wantGrad ? static_cast<size_t>(kVocabAlign * D) * sizeof(float) : 0);
    if (tail) {
      TESSERA_CUDA_CHECK(op, cudaMemcpyAsync(wTail.as<void>(), w.data<char>() + Vd * D * es, tail * D * es, cudaMemcpyDeviceToDevice, s));
      TESSERA_CUDA_CHECK(op, cudaMemsetAsync(wTail.as<char>() + tail * D * es, 0, (kVocabAlign - tail) * D * es, s));
    }
    // The logits chunk with rows Vp apart: c of the forward GEMMs, a of the backward ones.
    const cuda::GemmLd asC{0, 0, Vp}, asA{Vp, 0, 0};
    Scratch logits(static_cast<size_t>(chunk * Vp) * es);
    Scratch rowLoss(T * sizeof(double));
    Scratch counted(T * sizeof(int));
    const char* xp = x.data<char>();
    const int32_t* lab = labels.data<int32_t>();
    for (int64_t c0 = 0; c0 < T; c0 += chunk) {
      const int64_t C = std::min(chunk, T - c0);
      const char* xc = xp + c0 * D * es;
      char* lg = logits.as<char>();
      char* lgTail = lg + Vd * es;
      if (Vd) cuda::Gemm(dt, xc, wp, dt, lg, 0.f, nullptr, 1, C, Vd, D, false, true, reference, asC);
      if (tail) cuda::Gemm(dt, xc, wTail.as<void>(), dt, lgTail, 0.f, nullptr, 1, C, kVocabAlign, D, false, true, reference, asC);
      cuda::CrossEntropyRows(dt, lg, lab + c0, rowLoss.as<double>() + c0, counted.as<int>() + c0, C, V, Vp, ignore, gradScale,
                             wantGrad, &dev->bad);
      if (!wantGrad) continue;
      // dx: the tail's small share first: a bf16 dx is rounded twice (the first GEMM's output, then
      // the sum), and the first rounding then falls on the small share rather than the large one.
      char* dxc = dx.t->data<char>() + c0 * D * es;
      if (tail) cuda::Gemm(dt, lgTail, wTail.as<void>(), dt, dxc, 0.f, nullptr, 1, C, D, kVocabAlign, false, false, reference, asA);
      if (Vd) cuda::Gemm(dt, lg, wp, dt, dxc, tail ? 1.f : 0.f, nullptr, 1, C, D, Vd, false, false, reference, asA);
      const float beta = c0 == 0 ? 0.f : 1.f;
      if (Vd) cuda::Gemm(dt, lg, xc, DType::F32, dwp, beta, nullptr, 1, Vd, D, C, true, false, reference, asA);
      if (tail) cuda::Gemm(dt, lgTail, xc, DType::F32, dwTail.as<float>(), beta, nullptr, 1, kVocabAlign, D, C, true, false, reference, asA);
    }
    if (tail && wantGrad) {
      TESSERA_CUDA_CHECK(op, cudaMemcpyAsync(dwp + Vd * D, dwTail.as<float>(), tail * D * sizeof(float), cudaMemcpyDeviceToDevice, s));
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
