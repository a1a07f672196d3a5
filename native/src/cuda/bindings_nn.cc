// exports.cuda.layernorm / layernormBackward / gelu / geluBackward: GPT-2's row-wise layers, with
// the CPU bindings' argument lists (ops_nn.cc). Float tensors are float32 or bfloat16 and share
// one dtype; outputs take x's dtype except the statistics (mean, rstd) and the parameter
// gradients (dw, db), which are float32, as rmsnorm's are.
#include <string>

#include "core/tensor.h"
#include "cuda/binding_util.h"
#include "cuda/kernels.h"
#include "cuda/runtime.h"

namespace tessera {
namespace {

using cuda::Scratch;
using namespace cuda_bindings;

/** D, the row length, after checking that w and b are [D] of x's dtype. */
int64_t RowLength(const char* op, const TensorImpl& x, const TensorImpl& w, const TensorImpl* b) {
  NeedFloat(op, x);
  if (x.ndim() < 1 || w.dtype != x.dtype || w.numel != x.dim(-1) || (b && (b->dtype != x.dtype || b->numel != w.numel))) {
    throw OpError(std::string(op) + ": w and b must be [D] of x's dtype");
  }
  return w.numel;
}

void NeedRowStats(const char* op, const TensorImpl& s, int64_t rows) {
  if (s.dtype != DType::F32 || s.numel != rows) throw OpError(std::string(op) + ": mean and rstd must be float32 [rows]");
}

// layernorm(x, w, b, eps) -> [y (x's dtype), mean float32, rstd float32]
Napi::Value Layernorm(const Napi::CallbackInfo& info) {
  TensorImpl& x = CudaTensorArg(info, 0);
  TensorImpl& w = CudaTensorArg(info, 1);
  TensorImpl& b = CudaTensorArg(info, 2);
  int64_t D = RowLength("layernorm", x, w, &b), R = D ? x.numel / D : 0;
  Out y = NewTensor(info.Env(), x.dtype, x.shape, Device::CUDA);
  Out mean = NewTensor(info.Env(), DType::F32, {R}, Device::CUDA);
  Out rstd = NewTensor(info.Env(), DType::F32, {R}, Device::CUDA);
  cuda::Layernorm(x.dtype, x.data<void>(), w.data<void>(), b.data<void>(), y.t->data<void>(), mean.t->data<float>(),
                  rstd.t->data<float>(), R, D, static_cast<float>(NumberArg(info, 3)));
  return Results(info.Env(), {y.value, mean.value, rstd.value});
}

// layernormBackward(dy, x, w, mean, rstd) -> [dx (x's dtype), dw float32, db float32]
Napi::Value LayernormBackward(const Napi::CallbackInfo& info) {
  const char* op = "layernormBackward";
  TensorImpl& dy = CudaTensorArg(info, 0);
  TensorImpl& x = CudaTensorArg(info, 1);
  TensorImpl& w = CudaTensorArg(info, 2);
  TensorImpl& mean = CudaTensorArg(info, 3);
  TensorImpl& rstd = CudaTensorArg(info, 4);
  int64_t D = RowLength(op, x, w, nullptr), R = D ? x.numel / D : 0;
  NeedSame(op, dy, x);
  NeedRowStats(op, mean, R);
  NeedRowStats(op, rstd, R);
  Out dx = NewTensor(info.Env(), x.dtype, x.shape, Device::CUDA);
  Out dw = NewTensor(info.Env(), DType::F32, {D}, Device::CUDA);
  Out db = NewTensor(info.Env(), DType::F32, {D}, Device::CUDA);
  Scratch partial(2 * cuda::LayernormPartialRows(R) * D * sizeof(double));
  cuda::LayernormBackward(x.dtype, dy.data<void>(), x.data<void>(), w.data<void>(), mean.data<float>(), rstd.data<float>(),
                          dx.t->data<void>(), dw.t->data<float>(), db.t->data<float>(), partial.as<double>(), R, D);
  return Results(info.Env(), {dx.value, dw.value, db.value});
}

Napi::Value Gelu(const Napi::CallbackInfo& info) {
  TensorImpl& x = CudaTensorArg(info, 0);
  NeedFloat("gelu", x);
  Out y = NewTensor(info.Env(), x.dtype, x.shape, Device::CUDA);
  cuda::Gelu(x.dtype, x.data<void>(), y.t->data<void>(), x.numel);
  return y.value;
}

// geluBackward(dy, x) -> dx
Napi::Value GeluBackward(const Napi::CallbackInfo& info) {
  TensorImpl& dy = CudaTensorArg(info, 0);
  TensorImpl& x = CudaTensorArg(info, 1);
  NeedFloat("geluBackward", x);
  NeedSame("geluBackward", dy, x);
  Out dx = NewTensor(info.Env(), x.dtype, x.shape, Device::CUDA);
  cuda::GeluBackward(x.dtype, dy.data<void>(), x.data<void>(), dx.t->data<void>(), x.numel);
  return dx.value;
}

}  // namespace

void RegisterCudaNnBindings(Napi::Env env, Napi::Object cuda) {
  Export(env, cuda, "layernorm", Layernorm);
  Export(env, cuda, "layernormBackward", LayernormBackward);
  Export(env, cuda, "gelu", Gelu);
  Export(env, cuda, "geluBackward", GeluBackward);
}

}  // namespace tessera
