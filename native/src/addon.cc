// Entry point of the Tessera addon: reports which backends this build carries.
// Each family of ops registers its bindings; this file only assembles the module.
#include <napi.h>

#include "core/tensor.h"

#ifdef TESSERA_CUDA
#include <cuda_runtime.h>
#endif

namespace {

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("cpu", true);
#ifdef TESSERA_CUDA
  out.Set("cuda", true);
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  out.Set("cudaDevices", err == cudaSuccess ? n : 0);
#else
  out.Set("cuda", false);
  out.Set("cudaDevices", 0);
#endif
#ifdef TESSERA_CUBLASLT
  out.Set("cublasLt", true);
#else
  out.Set("cublasLt", false);
#endif
#ifdef TESSERA_NCCL
  out.Set("nccl", true);
#else
  out.Set("nccl", false);
#endif
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo));
  tessera::RegisterTensorBindings(env, exports);
  tessera::RegisterElementwiseBindings(env, exports);
  tessera::RegisterNnBindings(env, exports);
  tessera::RegisterAttentionBindings(env, exports);
  tessera::RegisterLossBindings(env, exports);
  tessera::RegisterOptimBindings(env, exports);
#ifdef TESSERA_CUDA
  tessera::RegisterCudaBindings(env, exports);
#endif
  return exports;
}

}  // namespace

NODE_API_MODULE(tessera_native, Init)
