// exports.cuda.ropeTable / ropeWithTable / ropeQKWithTable: RoPE through a per-batch cos/sin table (rope.cu), with
// the CPU bindings' argument lists (ops_nn.cc). The table is float32 on cuda; x is float32 or
// bfloat16, and the output takes its dtype.
#include <string>
#include <vector>

#include "core/rope_table.h"
#include "core/tensor.h"
#include "cuda/binding_util.h"
#include "cuda/kernels.h"

namespace tessera {
namespace {

using namespace cuda_bindings;

// ropeTable(positions int32[T], invFreq: Float64Array [half], attentionScaling, dtype) -> [T, 2, half]
Napi::Value RopeTable(const Napi::CallbackInfo& info) {
  TensorImpl& pos = CudaTensorArg(info, 0);
  if (pos.dtype != DType::I32 || pos.ndim() != 1) throw OpError("ropeTable: positions must be int32 [T]");
  const std::vector<float> f = InvFreqArg<float>(info, 1, "ropeTable");
  if (static_cast<DType>(static_cast<int>(NumberArg(info, 3))) != DType::F32) throw OpError("ropeTable: the table is float32 on cuda");
  const int64_t T = pos.numel, half = static_cast<int64_t>(f.size());
  Out table = NewTensor(info.Env(), DType::F32, {T, 2, half}, Device::CUDA);
  cuda::RopeTable(pos.data<int32_t>(), f.data(), NumberArg(info, 2), table.t->data<float>(), T, half);
  return table.value;
}

// ropeWithTable(x [T,H,Dh], table float32 [T, 2, Dh/2], inverse) -> y of x's dtype
Napi::Value RopeWithTable(const Napi::CallbackInfo& info) {
  TensorImpl& x = CudaTensorArg(info, 0);
  TensorImpl& table = CudaTensorArg(info, 1);
  const bool inverse = BoolArg(info, 2);
  const char* op = inverse ? "ropeBackwardWithTable" : "ropeWithTable";
  NeedFloat(op, x);
  CheckRopeTable(op, x, table, DType::F32, "float32 [T,2,Dh/2]");
  Out y = NewTensor(info.Env(), x.dtype, x.shape, Device::CUDA);
  cuda::RopeWithTable(x.dtype, x.data<void>(), table.data<float>(), inverse, y.t->data<void>(), x.dim(0), x.dim(1), x.dim(2));
  return y.value;
}

// ropeQKWithTable(q [T,Hq,Dh], k [T,Hk,Dh], table, inverse) -> [q', k']: ropeWithTable of both in
// one launch (a layer's q and k share the table).
Napi::Value RopeQKWithTable(const Napi::CallbackInfo& info) {
  TensorImpl& q = CudaTensorArg(info, 0);
  TensorImpl& k = CudaTensorArg(info, 1);
  TensorImpl& table = CudaTensorArg(info, 2);
  const bool inverse = BoolArg(info, 3);
  const char* op = inverse ? "ropeQKBackwardWithTable" : "ropeQKWithTable";
  NeedFloat(op, q);
  CheckRopeTable(op, q, table, DType::F32, "float32 [T,2,Dh/2]");
  CheckRopeTable(op, k, table, DType::F32, "float32 [T,2,Dh/2]");
  if (k.dtype != q.dtype) throw OpError(std::string(op) + ": k must have q's dtype");
  Out yq = NewTensor(info.Env(), q.dtype, q.shape, Device::CUDA);
  Out yk = NewTensor(info.Env(), k.dtype, k.shape, Device::CUDA);
  cuda::RopeQKWithTable(q.dtype, q.data<void>(), yq.t->data<void>(), q.dim(1), k.data<void>(), yk.t->data<void>(), k.dim(1),
                        table.data<float>(), inverse, q.dim(0), q.dim(2));
  return Results(info.Env(), {yq.value, yk.value});
}

}  // namespace

void RegisterCudaRopeBindings(Napi::Env env, Napi::Object cuda) {
  Export(env, cuda, "ropeTable", RopeTable);
  Export(env, cuda, "ropeWithTable", RopeWithTable);
  Export(env, cuda, "ropeQKWithTable", RopeQKWithTable);
}

}  // namespace tessera
