// exports.cuda.ropeTable / ropeWithTable / ropeQKWithTable / ropeQKVSplit / ropeQKVBackwardCat: RoPE through a per-batch cos/sin table (rope.cu), with
// the CPU bindings' argument lists (ops_nn.cc). The table is float32 on cuda; x is float32 or
// bfloat16, and the output takes its dtype (ropeQKVBackwardCat may also make float32 gradients a
// bfloat16 dqkv).
#include <cmath>
#include <string>
#include <vector>

#include "core/rope_table.h"
#include "core/tensor.h"
#include "cuda/binding_util.h"
#include "cuda/kernels.h"
#include "cuda/runtime.h"

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

// The groups of separate [T, H, Dh] tensors (heads 0 for an absent one).
cuda::RopeGroups Separate(std::initializer_list<std::pair<const TensorImpl*, TensorImpl*>> xy) {
  cuda::RopeGroups g{};
  int i = 0;
  for (auto [x, y] : xy) {
    g.x[i] = x->data<void>();
    g.y[i] = y->data<void>();
    g.heads[i] = x->dim(1);
    g.xRow[i] = g.yRow[i] = x->dim(1) * x->dim(2);
    ++i;
  }
  return g;
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
  cuda::RopeGroupsWithTable(x.dtype, Separate({{&x, y.t}}), table.data<float>(), inverse, x.dim(0), x.dim(2), op);
  return y.value;
}

// Checks q [T,Hq,Dh], k [T,Hk,Dh] (and v, k's shape) against the table; all of q's dtype.
void CheckQKV(const char* op, const TensorImpl& q, const TensorImpl& k, const TensorImpl* v, const TensorImpl& table) {
  NeedFloat(op, q);
  CheckRopeTable(op, q, table, DType::F32, "float32 [T,2,Dh/2]");
  CheckRopeTable(op, k, table, DType::F32, "float32 [T,2,Dh/2]");
  if (k.dtype != q.dtype || k.dim(2) != q.dim(2)) throw OpError(std::string(op) + ": k must have q's dtype and head dim");
  if (v && (v->dtype != q.dtype || v->shape != k.shape)) throw OpError(std::string(op) + ": v must have k's shape and q's dtype");
}

// ropeQKWithTable(q [T,Hq,Dh], k [T,Hk,Dh], table, inverse) -> [q', k']: ropeWithTable of both in
// one launch (a layer's q and k share the table).
Napi::Value RopeQKWithTable(const Napi::CallbackInfo& info) {
  TensorImpl& q = CudaTensorArg(info, 0);
  TensorImpl& k = CudaTensorArg(info, 1);
  TensorImpl& table = CudaTensorArg(info, 2);
  const bool inverse = BoolArg(info, 3);
  const char* op = inverse ? "ropeQKBackwardWithTable" : "ropeQKWithTable";
  CheckQKV(op, q, k, nullptr, table);
  Out yq = NewTensor(info.Env(), q.dtype, q.shape, Device::CUDA);
  Out yk = NewTensor(info.Env(), k.dtype, k.shape, Device::CUDA);
  cuda::RopeGroupsWithTable(q.dtype, Separate({{&q, yq.t}, {&k, yk.t}}), table.data<float>(), inverse, q.dim(0), q.dim(2), op);
  return Results(info.Env(), {yq.value, yk.value});
}

// ropeQKVSplit's groups: read from the column ranges of q, k and v in the fused projection
// [T, (Hq + 2 Hk) Dh], written to the separate [T, H, Dh] outputs.
cuda::RopeGroups FusedSplit(const TensorImpl& qkv, TensorImpl* const (&out)[3], int64_t Dh) {
  cuda::RopeGroups g{};
  const int64_t row = qkv.dim(1);
  const size_t e = DTypeSize(qkv.dtype);
  int64_t col = 0;
  for (int i = 0; i < 3; ++i) {
    g.heads[i] = out[i]->dim(1);
    g.x[i] = qkv.data<char>() + col * e;
    g.xRow[i] = row;
    g.y[i] = out[i]->data<void>();
    g.yRow[i] = g.heads[i] * Dh;
    col += g.heads[i] * Dh;
  }
  return g;
}

// ropeQKVSplit(qkv [T, (Hq + 2 Hk) Dh], table, Hq, Hk) -> [q', k', v]: a fused q/k/v projection's
// columns as q and k rotated ([T,Hq,Dh], [T,Hk,Dh]) and v moved ([T,Hk,Dh]), in one launch.
Napi::Value RopeQKVSplit(const Napi::CallbackInfo& info) {
  const char* op = "ropeQKVSplit";
  TensorImpl& qkv = CudaTensorArg(info, 0);
  TensorImpl& table = CudaTensorArg(info, 1);
  const double hq = NumberArg(info, 2), hk = NumberArg(info, 3);
  if (hq != std::floor(hq) || hk != std::floor(hk) || hq < 1 || hk < 1 || hq > 65536 || hk > 65536) throw OpError(std::string(op) + ": head counts must be integers in [1, 65536]");
  const int64_t Hq = static_cast<int64_t>(hq), Hk = static_cast<int64_t>(hk);
  NeedFloat(op, qkv);
  if (table.dtype != DType::F32 || table.ndim() != 3 || table.dim(1) != 2 || qkv.ndim() != 2 ||
      qkv.dim(0) != table.dim(0) || qkv.dim(1) != (Hq + 2 * Hk) * 2 * table.dim(2)) {
    throw OpError(std::string(op) + ": qkv must be [T, (Hq + 2 Hk) Dh] for a float32 table [T, 2, Dh/2]");
  }
  const int64_t T = qkv.dim(0), Dh = 2 * table.dim(2);
  Out q = NewTensor(info.Env(), qkv.dtype, {T, Hq, Dh}, Device::CUDA);
  Out k = NewTensor(info.Env(), qkv.dtype, {T, Hk, Dh}, Device::CUDA);
  Out v = NewTensor(info.Env(), qkv.dtype, {T, Hk, Dh}, Device::CUDA);
  cuda::RopeGroupsWithTable(qkv.dtype, FusedSplit(qkv, {q.t, k.t, v.t}, Dh), table.data<float>(), false, T, Dh, op);
  return Results(info.Env(), {q.value, k.value, v.value});
}

// ropeQKVBackwardCat(dq [T,Hq,Dh], dk [T,Hk,Dh], dv [T,Hk,Dh], table, outDtype, columnSums) ->
// [dqkv [T, (Hq + 2 Hk) Dh]] or [dqkv, sums float32 [(Hq + 2 Hk) Dh]]: ropeQKVSplit's transpose
// (dq and dk rotated back, dv moved) in one launch, the column sums (the fused projection's bias
// gradient) in the same pass. dq, dk, dv may be float32 (the attention backward's sums) for a
// bfloat16 dqkv.
Napi::Value RopeQKVBackwardCat(const Napi::CallbackInfo& info) {
  const char* op = "ropeQKVBackwardCat";
  TensorImpl& dq = CudaTensorArg(info, 0);
  TensorImpl& dk = CudaTensorArg(info, 1);
  TensorImpl& dv = CudaTensorArg(info, 2);
  TensorImpl& table = CudaTensorArg(info, 3);
  const DType outDt = static_cast<DType>(static_cast<int>(NumberArg(info, 4)));
  const bool columnSums = BoolArg(info, 5);
  CheckQKV(op, dq, dk, &dv, table);
  if (!(outDt == dq.dtype || (dq.dtype == DType::F32 && outDt == DType::BF16))) {
    throw OpError(std::string(op) + ": " + DTypeName(dq.dtype) + " gradients cannot give a " + DTypeName(outDt) + " dqkv");
  }
  const int64_t T = dq.dim(0), Hq = dq.dim(1), Hk = dk.dim(1), Dh = dq.dim(2), width = (Hq + 2 * Hk) * Dh;
  Out dqkv = NewTensor(info.Env(), outDt, {T, width}, Device::CUDA);
  const cuda::RopeCat a{{dq.data<void>(), dk.data<void>(), dv.data<void>()}, {Hq, Hk, Hk}, dqkv.t->data<void>()};
  if (!columnSums) {
    cuda::RopeQKVBackwardCat(dq.dtype, outDt, a, table.data<float>(), nullptr, nullptr, T, Dh);
    return Results(info.Env(), {dqkv.value});
  }
  Out sums = NewTensor(info.Env(), DType::F32, {width}, Device::CUDA);
  cuda::Scratch partial(static_cast<size_t>(cuda::RopeQKVBackwardCatPartials(T) * width) * sizeof(double));
  cuda::RopeQKVBackwardCat(dq.dtype, outDt, a, table.data<float>(), sums.t->data<float>(), partial.as<double>(), T, Dh);
  return Results(info.Env(), {dqkv.value, sums.value});
}

}  // namespace

void RegisterCudaRopeBindings(Napi::Env env, Napi::Object cuda) {
  Export(env, cuda, "ropeTable", RopeTable);
  Export(env, cuda, "ropeWithTable", RopeWithTable);
  Export(env, cuda, "ropeQKWithTable", RopeQKWithTable);
  Export(env, cuda, "ropeQKVSplit", RopeQKVSplit);
  Export(env, cuda, "ropeQKVBackwardCat", RopeQKVBackwardCat);
}

}  // namespace tessera
