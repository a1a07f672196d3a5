// exports.cuda.newtonSchulz5 / muonStep: the CPU bindings' argument lists (ops_optim.cc), plus
// on muonStep the bf16 compute copy (written in the update's pass, as adamwStep's) and on
// newtonSchulz5 the `reference` flag of matmul (the tiled GEMM over cuBLASLt, for tests). The
// Newton-Schulz runs in bf16 with fp32 accumulation (muon.cu); nothing waits for the device.
#include <algorithm>
#include <cmath>
#include <string>

#include "core/tensor.h"
#include "cuda/binding_util.h"
#include "cuda/kernels.h"

namespace tessera {
namespace {

using cuda_bindings::NeedFloat;

int StepsArg(const char* op, const Napi::CallbackInfo& info, size_t i) {
  double steps = NumberArg(info, i);
  if (!(steps >= 0) || steps != std::floor(steps) || steps > 1000) {
    throw OpError(std::string(op) + ": steps must be an integer in [0, 1000]");
  }
  return static_cast<int>(steps);
}

// newtonSchulz5(g[M,N] float32 | bfloat16, steps, reference?) -> g's dtype
Napi::Value NewtonSchulz5(const Napi::CallbackInfo& info) {
  TensorImpl& g = CudaTensorArg(info, 0);
  int steps = StepsArg("newtonSchulz5", info, 1);
  bool reference = OptionalFlagArg(info, 2);
  if (g.ndim() != 2) throw OpError("newtonSchulz5: g must be 2-D");
  NeedFloat("newtonSchulz5", g);
  Out out = NewTensor(info.Env(), g.dtype, g.shape, Device::CUDA);
  cuda::NewtonSchulz(g.dtype, g.data<void>(), g.dtype, out.t->data<void>(), g.dim(0), g.dim(1), steps, reference);
  return out.value;
}

// muonStep(p, g, buf, lr, momentum, nesterov, weightDecay, nsSteps, copy?): p, g, buf float32
// [M,N]; copy (bfloat16 [M,N], optional) receives the updated weights.
Napi::Value MuonStep(const Napi::CallbackInfo& info) {
  const char* op = "muonStep";
  TensorImpl& p = CudaTensorArg(info, 0);
  TensorImpl& g = CudaTensorArg(info, 1);
  TensorImpl& buf = CudaTensorArg(info, 2);
  double lr = NumberArg(info, 3), mu = NumberArg(info, 4);
  bool nesterov = BoolArg(info, 5);
  double wd = NumberArg(info, 6);
  int steps = StepsArg(op, info, 7);
  if (p.ndim() != 2) throw OpError("muonStep: the parameter must be a 2-D matrix");
  if (p.dtype != DType::F32 || g.dtype != DType::F32 || buf.dtype != DType::F32) {
    throw OpError("muonStep: param, grad and momentum must be float32 on cuda");
  }
  if (g.numel != p.numel || buf.numel != p.numel) throw OpError("muonStep: grad and momentum must match the parameter's size");
  TensorImpl* copy = nullptr;
  if (info.Length() > 8 && !info[8].IsUndefined() && !info[8].IsNull()) {
    copy = &CudaTensorArg(info, 8);
    if (copy->dtype != DType::BF16 || copy->numel != p.numel) throw OpError("muonStep: copy must be bfloat16 of the param's size");
  }
  const int64_t M = p.dim(0), N = p.dim(1);
  const double stepSize = lr * 0.2 * std::sqrt(double(std::max(M, N)));
  cuda::MuonStep(p.data<float>(), g.data<float>(), buf.data<float>(), copy ? copy->data<void>() : nullptr, M, N, float(mu), nesterov,
                 float(1 - lr * wd), float(stepSize), steps);
  return info.Env().Undefined();
}

}  // namespace

void RegisterCudaOptimBindings(Napi::Env env, Napi::Object cuda) {
  Export(env, cuda, "newtonSchulz5", NewtonSchulz5);
  Export(env, cuda, "muonStep", MuonStep);
}

}  // namespace tessera
