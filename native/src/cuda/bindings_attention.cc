// exports.cuda.attention / attentionBackward: the same argument lists as the CPU bindings
// (ops_attention.cc), plus an optional host copy of cu_seqlens last. q, k, v, o, dout are
// bfloat16; lse is float32. The offsets are validated on the host before any launch, so bad
// offsets are an Error rather than a fault; they also give the grid its longest sequence. With
// the host copy (a packed batch has it) nothing waits, and the kernels read an upload of that
// validated copy rather than the caller's device tensor; without it the B+1 ints are copied back
// from the device, and the host waits for the device there.
#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "cuda/attention.h"
#include "cuda/binding_util.h"
#include "cuda/runtime.h"

namespace tessera {
namespace {

using namespace cuda_bindings;

std::string Op(const char* op, const std::string& what) { return std::string(op) + ": " + what; }

void NeedBf16(const char* op, const char* name, const TensorImpl& t) {
  if (t.dtype != DType::BF16) {
    throw OpError(Op(op, std::string(name) + " has dtype " + DTypeName(t.dtype) +
                             ", but attention on cuda takes bfloat16 (cast q, k, v first)"));
  }
}

// The validated shape and the offsets the kernels read: when the caller gave the offsets' host
// copy, an upload of it (held by `upload`), so what was validated is what runs; else cu itself.
struct Validated {
  cuda::AttentionShape s;
  std::unique_ptr<cuda::Scratch> upload;
  const int32_t* offsets;
};

Validated Validate(const char* op, const TensorImpl& q, const TensorImpl& k, const TensorImpl& v, const TensorImpl& cu,
                  bool causal, double window, double scale, const Napi::Value& host) {
  NeedBf16(op, "q", q);
  NeedBf16(op, "k", k);
  NeedBf16(op, "v", v);
  if (q.ndim() != 3 || k.ndim() != 3 || k.shape != v.shape) throw OpError(Op(op, "q, k, v must be [T,H,Dh] with k and v alike"));
  cuda::AttentionShape s{q.dim(0), q.dim(1), k.dim(1), q.dim(2), 0, 0, causal, 0, static_cast<float>(scale)};
  if (k.dim(0) != s.T || k.dim(2) != s.Dh || s.Hkv == 0 || s.Hq % s.Hkv != 0) {
    throw OpError(Op(op, "k and v must be [T,Hkv,Dh] with Hq divisible by Hkv"));
  }
  if (!cuda::AttentionHeadDimSupported(s.Dh)) {
    throw OpError(Op(op, "head dim " + std::to_string(s.Dh) + " is not supported on cuda (64 or 128)"));
  }
  if (s.Hq > 65535) throw OpError(Op(op, "at most 65535 query heads on cuda"));
  // The kernels take each row's maximum before scaling (the scale folds into the exponent).
  if (!(scale > 0)) throw OpError(Op(op, "scale must be positive on cuda, got " + std::to_string(scale)));
  if (window < 0 || (window > 0 && !causal)) throw OpError(Op(op, "a sliding window must be positive and needs causal attention"));
  // A window longer than any sequence restricts nothing; clamping keeps i - window in int range.
  s.window = window > (1 << 30) ? (1 << 30) : static_cast<int64_t>(window);

  if (cu.dtype != DType::I32 || cu.ndim() != 1 || cu.numel < 2) throw OpError(Op(op, "cu_seqlens must be int32 [B+1] with B >= 1"));
  if (cu.numel - 1 > 65535) throw OpError(Op(op, "at most 65535 sequences on cuda"));
  std::vector<int32_t> c(cu.numel);
  const bool fromHost = host.IsTypedArray() && host.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array;
  if (fromHost) {
    Napi::Int32Array h = host.As<Napi::Int32Array>();
    if (static_cast<int64_t>(h.ElementLength()) != cu.numel) throw OpError(Op(op, "the host copy of cu_seqlens differs in length from cu_seqlens"));
    std::copy(h.Data(), h.Data() + h.ElementLength(), c.begin());
  } else {
    DeviceCopy(op, c.data(), Device::CPU, cu.data<void>(), Device::CUDA, c.size() * sizeof(int32_t));
  }
  if (c[0] != 0) throw OpError(Op(op, "cu_seqlens must start at 0, got " + std::to_string(c[0])));
  for (size_t b = 1; b < c.size(); ++b) {
    if (c[b] < c[b - 1]) throw OpError(Op(op, "cu_seqlens must be non-decreasing (at index " + std::to_string(b) + ")"));
    s.maxLen = std::max<int64_t>(s.maxLen, c[b] - c[b - 1]);
  }
  if (c.back() != s.T) {
    throw OpError(Op(op, "cu_seqlens must end at T=" + std::to_string(s.T) + ", got " + std::to_string(c.back())));
  }
  s.batch = cu.numel - 1;
  if (!fromHost) return {s, nullptr, cu.data<int32_t>()};
  const size_t bytes = c.size() * sizeof(int32_t);
  auto upload = std::make_unique<cuda::Scratch>(bytes);
  DeviceUpload(op, upload->as<void>(), bytes, [&](void* dst) { std::copy(c.begin(), c.end(), static_cast<int32_t*>(dst)); });
  const int32_t* offsets = upload->as<int32_t>();
  return {s, std::move(upload), offsets};
}

// attention(q, k, v, cu, causal, window, scale, cuHost?) -> [o (bf16), lse (float32 [Hq,T])]
Napi::Value Attention(const Napi::CallbackInfo& info) {
  const char* op = "attention";
  TensorImpl& q = CudaTensorArg(info, 0);
  TensorImpl& k = CudaTensorArg(info, 1);
  TensorImpl& v = CudaTensorArg(info, 2);
  TensorImpl& cu = CudaTensorArg(info, 3);
  const Validated in = Validate(op, q, k, v, cu, BoolArg(info, 4), NumberArg(info, 5), NumberArg(info, 6), info[7]);
  const cuda::AttentionShape& s = in.s;
  Out o = NewTensor(info.Env(), DType::BF16, q.shape, Device::CUDA);
  Out lse = NewTensor(info.Env(), DType::F32, {s.Hq, s.T}, Device::CUDA);
  cuda::AttentionForward(s, q.data<void>(), k.data<void>(), v.data<void>(), in.offsets, o.t->data<void>(),
                         lse.t->data<float>());
  return Results(info.Env(), {o.value, lse.value});
}

// attentionBackward(dout, q, k, v, o, lse, cu, causal, window, scale, cuHost?, float32Grads?) -> [dq, dk, dv]:
// bf16, or with float32Grads the kernels' fp32 sums themselves (views of one buffer, no cast pass)
// for a caller that reads them once (the fused RoPE backward).
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  const char* op = "attentionBackward";
  TensorImpl& dout = CudaTensorArg(info, 0);
  TensorImpl& q = CudaTensorArg(info, 1);
  TensorImpl& k = CudaTensorArg(info, 2);
  TensorImpl& v = CudaTensorArg(info, 3);
  TensorImpl& o = CudaTensorArg(info, 4);
  TensorImpl& lse = CudaTensorArg(info, 5);
  TensorImpl& cu = CudaTensorArg(info, 6);
  const Validated in = Validate(op, q, k, v, cu, BoolArg(info, 7), NumberArg(info, 8), NumberArg(info, 9), info[10]);
  const cuda::AttentionShape& s = in.s;
  NeedBf16(op, "dout", dout);
  NeedBf16(op, "o", o);
  if (dout.shape != q.shape || o.shape != q.shape) throw OpError(Op(op, "dout and o must match q's shape"));
  if (lse.dtype != DType::F32 || lse.numel != s.Hq * s.T) throw OpError(Op(op, "lse must be float32 [Hq,T] on cuda"));
  const bool float32Grads = OptionalFlagArg(info, 11);
  cuda::Scratch rowDot(std::max<int64_t>(1, s.Hq * s.T) * sizeof(float));
  const std::vector<int64_t> accShape{q.numel + 2 * k.numel};
  if (float32Grads) {
    // The three results are views of one storage, which lives as long as the last of them (no
    // handle of its own that would hold it until a garbage collection).
    TensorImpl acc;
    acc.dtype = DType::F32;
    acc.shape = accShape;
    acc.numel = accShape[0];
    acc.storage = std::make_shared<Storage>(std::max<int64_t>(1, acc.numel) * sizeof(float), Device::CUDA);
    cuda::AttentionBackward(s, dout.data<void>(), q.data<void>(), k.data<void>(), v.data<void>(), o.data<void>(), lse.data<float>(),
                            in.offsets, nullptr, nullptr, nullptr, acc.data<float>(), rowDot.as<float>());
    return Results(info.Env(), {NewViewAt(info.Env(), acc, q.shape, 0), NewViewAt(info.Env(), acc, k.shape, q.numel * sizeof(float)),
                                NewViewAt(info.Env(), acc, v.shape, (q.numel + k.numel) * sizeof(float))});
  }
  Out dq = NewTensor(info.Env(), DType::BF16, q.shape, Device::CUDA);
  Out dk = NewTensor(info.Env(), DType::BF16, k.shape, Device::CUDA);
  Out dv = NewTensor(info.Env(), DType::BF16, v.shape, Device::CUDA);
  cuda::Scratch acc(std::max<int64_t>(1, accShape[0]) * sizeof(float));
  cuda::AttentionBackward(s, dout.data<void>(), q.data<void>(), k.data<void>(), v.data<void>(), o.data<void>(),
                          lse.data<float>(), in.offsets, dq.t->data<void>(), dk.t->data<void>(), dv.t->data<void>(),
                          acc.as<float>(), rowDot.as<float>());
  return Results(info.Env(), {dq.value, dk.value, dv.value});
}

// attentionKernels(which?: "auto" | "mma" | "wgmma"): sets the kernel family (attention.h) when
// given; returns the family the next call uses.
Napi::Value AttentionKernels(const Napi::CallbackInfo& info) {
  const char* op = "cudaAttentionKernels";
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    const std::string which = info[0].As<Napi::String>().Utf8Value();
    if (which == "auto") {
      cuda::SetAttentionKernels(op, cuda::AttentionKernels::Auto);
    } else if (which == "mma") {
      cuda::SetAttentionKernels(op, cuda::AttentionKernels::MmaSync);
    } else if (which == "wgmma") {
      cuda::SetAttentionKernels(op, cuda::AttentionKernels::Wgmma);
    } else {
      throw OpError(Op(op, "unknown kernels '" + which + "' (auto, mma or wgmma)"));
    }
  }
  return Napi::String::New(info.Env(), cuda::AttentionKernelsInUse());
}

// attentionFamilies() -> the kernel families this build and GPU can run, mma first.
Napi::Value AttentionFamilies(const Napi::CallbackInfo& info) {
  Napi::Array out = Napi::Array::New(info.Env());
  out.Set(0u, Napi::String::New(info.Env(), "mma"));
  if (cuda::AttentionWgmmaRuns("cudaAttentionFamilies")) out.Set(1u, Napi::String::New(info.Env(), "wgmma"));
  return out;
}

}  // namespace

void RegisterCudaAttentionBindings(Napi::Env env, Napi::Object cuda) {
  Export(env, cuda, "attentionKernels", AttentionKernels);
  Export(env, cuda, "attentionFamilies", AttentionFamilies);
  Export(env, cuda, "attention", Attention);
  Export(env, cuda, "attentionBackward", AttentionBackward);
}

}  // namespace tessera
