// The CUDA half of the addon's bindings, exported as `exports.cuda`: the device ops (the same
// signatures as their CPU counterparts where both exist), the allocator's figures, and stream
// events. Inputs arrive checked by the TypeScript face; this rechecks what memory safety needs.
#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "core/rope_table.h"
#include "core/tensor.h"
#include "cuda/binding_util.h"
#include "cuda/kernels.h"
#include "cuda/runtime.h"

namespace tessera {
namespace {

using cuda::Scratch;
using namespace cuda_bindings;

// A device flag set by kernels that meet bad data (ids out of range); reading it waits for the
// stream. Ids the caller has checked on the host (a model's batch) need no flag: a wait per call
// would stop the host from queueing ahead of the device (the embedding backward ends the step's
// backward, where the host prepares the optimizer while the device works).
class BadFlag {
 public:
  BadFlag(const char* op, bool hostChecked) : op_(op) {
    if (hostChecked) return;
    mem_.emplace(sizeof(int));
    TESSERA_CUDA_CHECK(op, cudaMemsetAsync(ptr(), 0, sizeof(int), cuda::ComputeStream()));
  }
  int* ptr() const { return mem_ ? mem_->as<int>() : nullptr; }
  bool Raised() const {
    if (!mem_) return false;
    int v = 0;
    DeviceCopy(op_, &v, Device::CPU, ptr(), Device::CUDA, sizeof(int));
    return v != 0;
  }

 private:
  const char* op_;
  std::optional<Scratch> mem_;
};

// ---------------------------------------------------------------- memory, streams, events

Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  cuda::MemoryStats s = cuda::GetMemoryStats();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("allocated", static_cast<double>(s.allocated));
  o.Set("reserved", static_cast<double>(s.reserved));
  o.Set("peak", static_cast<double>(s.peak));
  o.Set("mallocs", static_cast<double>(s.mallocs));
  o.Set("frees", static_cast<double>(s.frees));
  return o;
}

Napi::Value ResetPeak(const Napi::CallbackInfo& info) {
  cuda::ResetPeak();
  return info.Env().Undefined();
}

Napi::Value EmptyCache(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(cuda::EmptyCache()));
}

Napi::Value SetDebugFill(const Napi::CallbackInfo& info) {
  cuda::SetDebugFill(BoolArg(info, 0));
  return info.Env().Undefined();
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  cuda::EnsureInit("cuda");
  return info.Env().Undefined();
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  cuda::EnsureInit("synchronize");
  TESSERA_CUDA_CHECK("synchronize", cudaDeviceSynchronize());
  return info.Env().Undefined();
}

const napi_type_tag kEventTag = {0x3c1d0e7a55aa4e21ULL, 0x8f0b2d6c9e4a7b13ULL};

cudaStream_t StreamArg(const Napi::CallbackInfo& info, size_t i) {
  int which = static_cast<int>(NumberArg(info, i));
  if (which == 0) return cuda::ComputeStream();
  if (which == 1) return cuda::CommStream();
  throw OpError("stream must be 0 (compute) or 1 (comm)");
}

cudaEvent_t EventArg(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsExternal() || !info[i].As<Napi::External<CUevent_st>>().CheckTypeTag(&kEventTag)) {
    throw OpError("argument " + std::to_string(i) + " is not a cuda event");
  }
  return info[i].As<Napi::External<CUevent_st>>().Data();
}

// recordEvent(stream, timed?) -> event: marks the work queued on stream so far. Timed events
// (profiling only: they cost more to record) can be measured with eventElapsedMs.
Napi::Value RecordEvent(const Napi::CallbackInfo& info) {
  cudaStream_t s = StreamArg(info, 0);
  bool timed = OptionalFlagArg(info, 1);
  cudaEvent_t e;
  TESSERA_CUDA_CHECK("recordEvent", cudaEventCreateWithFlags(&e, timed ? cudaEventDefault : cudaEventDisableTiming));
  cudaError_t err = cudaEventRecord(e, s);
  if (err != cudaSuccess) {
    cudaEventDestroy(e);
    cuda::Check("recordEvent", "cudaEventRecord", err);
  }
  auto ext = Napi::External<CUevent_st>::New(info.Env(), e, [](Napi::Env, CUevent_st* ev) { cudaEventDestroy(ev); });
  ext.TypeTag(&kEventTag);
  return ext;
}

// waitEvent(stream, event): work queued on stream from now on runs after the event's work.
Napi::Value WaitEvent(const Napi::CallbackInfo& info) {
  TESSERA_CUDA_CHECK("waitEvent", cudaStreamWaitEvent(StreamArg(info, 0), EventArg(info, 1), 0));
  return info.Env().Undefined();
}

// eventElapsedMs(start, end): device time between two completed timed events.
Napi::Value EventElapsedMs(const Napi::CallbackInfo& info) {
  float ms = 0;
  TESSERA_CUDA_CHECK("eventElapsedMs", cudaEventElapsedTime(&ms, EventArg(info, 0), EventArg(info, 1)));
  return Napi::Number::New(info.Env(), ms);
}

Napi::Value EventSynchronize(const Napi::CallbackInfo& info) {
  TESSERA_CUDA_CHECK("eventSynchronize", cudaEventSynchronize(EventArg(info, 0)));
  return info.Env().Undefined();
}

Napi::Value DebugBadLaunch(const Napi::CallbackInfo& info) {
  cuda::BadLaunch();
  return info.Env().Undefined();
}

// ---------------------------------------------------------------- elementwise, casts, norms

Napi::Value Cast(const Napi::CallbackInfo& info) {
  TensorImpl& s = CudaTensorArg(info, 0);
  int code = static_cast<int>(NumberArg(info, 1));
  if (code < 0 || code > 4) throw OpError("cast: unknown dtype code " + std::to_string(code));
  DType to = static_cast<DType>(code);
  if (s.dtype != to) {
    NeedFloat("cast", s);
    if (to != DType::F32 && to != DType::BF16) throw OpError(std::string("cast: to ") + DTypeName(to) + " is not supported on cuda");
  }
  Out out = NewTensor(info.Env(), to, s.shape, Device::CUDA);
  cuda::Cast(s.dtype, s.data<void>(), to, out.t->data<void>(), s.numel);
  return out.value;
}

Napi::Value Binary(const Napi::CallbackInfo& info, const char* op, void (*f)(DType, const void*, const void*, void*, int64_t)) {
  TensorImpl& a = CudaTensorArg(info, 0);
  TensorImpl& b = CudaTensorArg(info, 1);
  NeedFloat(op, a);
  NeedSame(op, a, b);
  Out out = NewTensor(info.Env(), a.dtype, a.shape, Device::CUDA);
  f(a.dtype, a.data<void>(), b.data<void>(), out.t->data<void>(), a.numel);
  return out.value;
}

Napi::Value Add(const Napi::CallbackInfo& info) { return Binary(info, "add", cuda::Add); }
Napi::Value Mul(const Napi::CallbackInfo& info) { return Binary(info, "mul", cuda::Mul); }

Napi::Value Scale(const Napi::CallbackInfo& info) {
  TensorImpl& a = CudaTensorArg(info, 0);
  NeedFloat("scale", a);
  Out out = NewTensor(info.Env(), a.dtype, a.shape, Device::CUDA);
  cuda::Scale(a.dtype, a.data<void>(), static_cast<float>(NumberArg(info, 1)), out.t->data<void>(), a.numel);
  return out.value;
}

Napi::Value ScaleInPlace(const Napi::CallbackInfo& info) {
  TensorImpl& a = CudaTensorArg(info, 0);
  NeedFloat("scaleInPlace", a);
  cuda::Scale(a.dtype, a.data<void>(), static_cast<float>(NumberArg(info, 1)), a.data<void>(), a.numel);
  return info.Env().Undefined();
}

// addInto(dst, src, alpha): dst and src may differ in float dtype (bf16 into fp32 accumulators).
Napi::Value AddInto(const Napi::CallbackInfo& info) {
  TensorImpl& d = CudaTensorArg(info, 0);
  TensorImpl& s = CudaTensorArg(info, 1);
  NeedFloat("addInto", d);
  NeedFloat("addInto", s);
  if (d.numel != s.numel) throw OpError("addInto: sizes differ");
  cuda::AddInto(d.dtype, d.data<void>(), s.dtype, s.data<void>(), static_cast<float>(NumberArg(info, 2)), d.numel);
  return info.Env().Undefined();
}

// The sum of squares of ts into out (one double on the device), queued: nothing waits.
void SumSquaresInto(const std::vector<TensorImpl*>& ts, double* out) {
  std::vector<cuda::SumSquaresInput> in;
  for (TensorImpl* t : ts) {
    NeedFloat("sumSquares", *t);
    in.push_back({t->dtype, t->data<void>(), t->numel});
  }
  Scratch partial(cuda::SumSquaresPartials(in.data(), int(in.size())) * sizeof(double));
  cuda::SumSquaresMany(in.data(), int(in.size()), partial.as<double>(), out);
}

double SumSquaresOf(const std::vector<TensorImpl*>& ts) {
  Scratch acc(sizeof(double));
  SumSquaresInto(ts, acc.as<double>());
  double out = 0;
  DeviceCopy("sumSquares", &out, Device::CPU, acc.as<double>(), Device::CUDA, sizeof(double));
  return out;
}

Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), SumSquaresOf({&CudaTensorArg(info, 0)}));
}

// sumSquaresManyQueued(tensors[]) -> float64 [1] cuda tensor: the sum of squares of them all,
// queued, so a caller may do host work before it reads the result (the optimizer's, before
// clipping).
Napi::Value SumSquaresManyQueued(const Napi::CallbackInfo& info) {
  std::vector<TensorImpl*> ts = TensorList(info[0], Device::CUDA, "sumSquares: ts");
  Out out = NewTensor(info.Env(), DType::F64, {1}, Device::CUDA);
  SumSquaresInto(ts, out.t->data<double>());
  return out.value;
}

// How many GEMMs each path ran, so tests can tell which one served them.
struct MatmulCounts {
  double cublasLt = 0;
  double reference = 0;
};
MatmulCounts gMatmulCounts;

struct GemmShape {
  int64_t batch, M, N, K;
  std::vector<int64_t> out;
};

GemmShape GemmShapeOf(const TensorImpl& a, const TensorImpl& b, bool ta, bool tb) {
  NeedFloat("matmul", a);
  if (a.dtype != b.dtype || a.ndim() != b.ndim() || (a.ndim() != 2 && a.ndim() != 3)) {
    throw OpError("matmul: a and b must share a dtype and both be 2-D or 3-D");
  }
  int r = a.ndim();
  int64_t batch = r == 3 ? a.dim(0) : 1;
  int64_t M = a.dim(ta ? r - 1 : r - 2), K = a.dim(ta ? r - 2 : r - 1);
  int64_t K2 = b.dim(tb ? r - 1 : r - 2), N = b.dim(tb ? r - 2 : r - 1);
  if (K != K2 || (r == 3 && b.dim(0) != batch)) throw OpError("matmul: shapes do not match");
  return {batch, M, N, K, r == 3 ? std::vector<int64_t>{batch, M, N} : std::vector<int64_t>{M, N}};
}

bool OptionalBool(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && !info[i].IsUndefined() && BoolArg(info, i);
}

void CountGemm(bool cublasLt) { (cublasLt ? gMatmulCounts.cublasLt : gMatmulCounts.reference)++; }

// matmul(a, b, transA, transB, reference?, bias?): 2-D, or batched 3-D; bias [N] of a's dtype
// is added to every row. cuBLASLt where the build has it and it has an algorithm for the case;
// else, or when `reference` is true, the tiled GEMM.
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  TensorImpl& a = CudaTensorArg(info, 0);
  TensorImpl& b = CudaTensorArg(info, 1);
  bool ta = BoolArg(info, 2), tb = BoolArg(info, 3);
  bool reference = OptionalBool(info, 4);
  GemmShape g = GemmShapeOf(a, b, ta, tb);
  const void* bias = nullptr;
  if (info.Length() > 5 && !info[5].IsUndefined() && !info[5].IsNull()) {
    TensorImpl& bt = CudaTensorArg(info, 5);
    if (bt.dtype != a.dtype || bt.numel != g.N) throw OpError("matmul: bias must be [N] of the inputs' dtype");
    bias = bt.data<void>();
  }
  Out c = NewTensor(info.Env(), a.dtype, g.out, Device::CUDA);
  CountGemm(cuda::Gemm(a.dtype, a.data<void>(), b.data<void>(), a.dtype, c.t->data<void>(), 0.f, bias, g.batch, g.M, g.N, g.K, ta,
                       tb, reference));
  return c.value;
}

// matmulInto(out, a, b, transA, transB, accumulate, reference?): out (float32, or a's dtype)
// = op(a) op(b), or += with accumulate (weight gradients summed over micro-batches in fp32).
Napi::Value MatmulInto(const Napi::CallbackInfo& info) {
  TensorImpl& out = CudaTensorArg(info, 0);
  TensorImpl& a = CudaTensorArg(info, 1);
  TensorImpl& b = CudaTensorArg(info, 2);
  bool ta = BoolArg(info, 3), tb = BoolArg(info, 4), accumulate = BoolArg(info, 5);
  bool reference = OptionalBool(info, 6);
  GemmShape g = GemmShapeOf(a, b, ta, tb);
  if ((out.dtype != DType::F32 && out.dtype != a.dtype) || out.shape != g.out) {
    throw OpError("matmulInto: out must have the product's shape and be float32 or the inputs' dtype");
  }
  if (out.storage == a.storage || out.storage == b.storage) throw OpError("matmulInto: out must not share storage with a or b");
  CountGemm(cuda::Gemm(a.dtype, a.data<void>(), b.data<void>(), out.dtype, out.data<void>(), accumulate ? 1.f : 0.f, nullptr,
                       g.batch, g.M, g.N, g.K, ta, tb, reference));
  return info.Env().Undefined();
}

// addBias(x[..., N], b[N]) -> x + b, x's dtype.
Napi::Value AddBias(const Napi::CallbackInfo& info) {
  TensorImpl& x = CudaTensorArg(info, 0);
  TensorImpl& b = CudaTensorArg(info, 1);
  NeedFloat("addBias", x);
  if (x.dtype != b.dtype || x.ndim() < 1 || x.dim(-1) != b.numel) throw OpError("addBias: bias must be [N] for x[..., N]");
  int64_t N = b.numel, R = N ? x.numel / N : 0;
  Out y = NewTensor(info.Env(), x.dtype, x.shape, Device::CUDA);
  cuda::AddBias(x.dtype, x.data<void>(), b.data<void>(), y.t->data<void>(), R, N);
  return y.value;
}

// sumRows(dy[..., N]) -> [N] float32 (a bias gradient), fp64 sums in a fixed order.
Napi::Value SumRows(const Napi::CallbackInfo& info) {
  TensorImpl& dy = CudaTensorArg(info, 0);
  NeedFloat("sumRows", dy);
  if (dy.ndim() < 1) throw OpError("sumRows: dy must have at least one dimension");
  int64_t N = dy.dim(-1), R = N ? dy.numel / N : 0;
  Out out = NewTensor(info.Env(), DType::F32, {N}, Device::CUDA);
  Scratch partial(cuda::SumRowsPartials(R) * std::max<int64_t>(N, 1) * sizeof(double));
  cuda::SumRows(dy.dtype, dy.data<void>(), out.t->data<float>(), partial.as<double>(), R, N);
  return out.value;
}

// copyColumns(one [R, W], parts [R, w_i][], split, op): as the CPU's, in one launch.
Napi::Value CopyColumns(const Napi::CallbackInfo& info) {
  TensorImpl& one = CudaTensorArg(info, 0);
  const std::string op = info[3].As<Napi::String>().Utf8Value();
  std::vector<TensorImpl*> parts = ColumnPartsArg(info, 1, one, op);
  const int64_t e = static_cast<int64_t>(DTypeSize(one.dtype));
  std::vector<void*> ptrs;
  std::vector<int64_t> widths;
  for (TensorImpl* p : parts) {
    ptrs.push_back(p->data<void>());
    widths.push_back(p->dim(1) * e);
  }
  cuda::CopyColumns(one.data<void>(), ptrs, widths, e, one.dim(0), BoolArg(info, 2), op.c_str());
  return info.Env().Undefined();
}

Napi::Value MatmulCountsOf(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("cublasLt", gMatmulCounts.cublasLt);
  o.Set("reference", gMatmulCounts.reference);
  return o;
}

// ---------------------------------------------------------------- layers

Napi::Value Embedding(const Napi::CallbackInfo& info) {
  TensorImpl& w = CudaTensorArg(info, 0);
  TensorImpl& ids = CudaTensorArg(info, 1);
  NeedFloat("embedding", w);
  if (ids.dtype != DType::I32 || w.ndim() != 2) throw OpError("embedding: weight must be [V,D] and ids int32");
  int64_t V = w.dim(0), D = w.dim(1), T = ids.numel;
  Out out = NewTensor(info.Env(), w.dtype, {T, D}, Device::CUDA);
  BadFlag bad("embedding", OptionalFlagArg(info, 2));
  cuda::Embedding(w.dtype, w.data<void>(), ids.data<int32_t>(), out.t->data<void>(), T, D, V, bad.ptr());
  if (bad.Raised()) throw OpError("embedding: an id is out of range [0, " + std::to_string(V) + ")");
  return out.value;
}

void NeedEmbeddingGrad(const char* op, const TensorImpl& dy, const TensorImpl& ids) {
  NeedFloat(op, dy);
  if (ids.dtype != DType::I32 || dy.ndim() != 2 || dy.dim(0) != ids.numel) throw OpError(std::string(op) + ": dy must be [T,D] and ids int32 [T]");
}

// embeddingBackward(dy, ids, V) -> dW [V,D] float32 (a parameter gradient: fp32 whatever dy is).
Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  TensorImpl& dy = CudaTensorArg(info, 0);
  TensorImpl& ids = CudaTensorArg(info, 1);
  int64_t V = static_cast<int64_t>(NumberArg(info, 2));
  NeedEmbeddingGrad("embeddingBackward", dy, ids);
  int64_t T = dy.dim(0), D = dy.dim(1);
  Out out = NewTensor(info.Env(), DType::F32, {V, D}, Device::CUDA);
  BadFlag bad("embeddingBackward", OptionalFlagArg(info, 3));
  cuda::EmbeddingBackward(dy.dtype, dy.data<void>(), ids.data<int32_t>(), out.t->data<float>(), T, D, V, bad.ptr());
  if (bad.Raised()) throw OpError("embeddingBackward: an id is out of range [0, " + std::to_string(V) + ")");
  return out.value;
}

// embeddingBackwardInto(dw, dy, ids): dw (float32 [V,D]) += the rows of dy at ids.
Napi::Value EmbeddingBackwardInto(const Napi::CallbackInfo& info) {
  TensorImpl& dw = CudaTensorArg(info, 0);
  TensorImpl& dy = CudaTensorArg(info, 1);
  TensorImpl& ids = CudaTensorArg(info, 2);
  NeedEmbeddingGrad("embeddingBackwardInto", dy, ids);
  if (dw.dtype != DType::F32 || dw.ndim() != 2 || dw.dim(1) != dy.dim(1)) throw OpError("embeddingBackwardInto: dw must be float32 [V,D]");
  int64_t V = dw.dim(0);
  BadFlag bad("embeddingBackwardInto", OptionalFlagArg(info, 3));
  cuda::EmbeddingBackwardAdd(dy.dtype, dy.data<void>(), ids.data<int32_t>(), dw.data<float>(), dy.dim(0), dy.dim(1), V, bad.ptr());
  if (bad.Raised()) throw OpError("embeddingBackwardInto: an id is out of range [0, " + std::to_string(V) + ") (dw holds the rows before it)");
  return info.Env().Undefined();
}

// rmsnorm(x, w, eps) -> [y (x's dtype), rstd float32]
Napi::Value Rmsnorm(const Napi::CallbackInfo& info) {
  TensorImpl& x = CudaTensorArg(info, 0);
  TensorImpl& w = CudaTensorArg(info, 1);
  NeedFloat("rmsnorm", x);
  if (w.dtype != x.dtype || x.ndim() < 1 || w.numel != x.dim(-1)) throw OpError("rmsnorm: w must be [D] of x's dtype");
  int64_t D = w.numel, R = D ? x.numel / D : 0;
  Out y = NewTensor(info.Env(), x.dtype, x.shape, Device::CUDA);
  Out rstd = NewTensor(info.Env(), DType::F32, {R}, Device::CUDA);
  cuda::Rmsnorm(x.dtype, x.data<void>(), w.data<void>(), y.t->data<void>(), rstd.t->data<float>(), R, D,
                static_cast<float>(NumberArg(info, 2)));
  return Results(info.Env(), {y.value, rstd.value});
}

// rmsnormResidual(x, residual, w, eps) -> [y, sum (x's dtype), rstd float32]: sum = x + residual, y = rmsnorm(sum).
Napi::Value RmsnormResidual(const Napi::CallbackInfo& info) {
  TensorImpl& x = CudaTensorArg(info, 0);
  TensorImpl& res = CudaTensorArg(info, 1);
  TensorImpl& w = CudaTensorArg(info, 2);
  NeedFloat("rmsnormResidual", x);
  NeedSame("rmsnormResidual", x, res);
  if (w.dtype != x.dtype || x.ndim() < 1 || w.numel != x.dim(-1)) throw OpError("rmsnormResidual: w must be [D] of x's dtype");
  int64_t D = w.numel, R = D ? x.numel / D : 0;
  Out y = NewTensor(info.Env(), x.dtype, x.shape, Device::CUDA);
  Out sum = NewTensor(info.Env(), x.dtype, x.shape, Device::CUDA);
  Out rstd = NewTensor(info.Env(), DType::F32, {R}, Device::CUDA);
  cuda::RmsnormResidual(x.dtype, x.data<void>(), res.data<void>(), w.data<void>(), sum.t->data<void>(), y.t->data<void>(),
                        rstd.t->data<float>(), R, D, static_cast<float>(NumberArg(info, 3)));
  Napi::Array out = Napi::Array::New(info.Env(), 3);
  out.Set(0u, y.value);
  out.Set(1u, sum.value);
  out.Set(2u, rstd.value);
  return out;
}

// rmsnormBackward(dy, x, w, rstd, residualGrad?) -> [dx (x's dtype, plus residualGrad when given), dw float32]
Napi::Value RmsnormBackward(const Napi::CallbackInfo& info) {
  TensorImpl& dy = CudaTensorArg(info, 0);
  TensorImpl& x = CudaTensorArg(info, 1);
  TensorImpl& w = CudaTensorArg(info, 2);
  TensorImpl& rstd = CudaTensorArg(info, 3);
  NeedFloat("rmsnormBackward", x);
  NeedSame("rmsnormBackward", dy, x);
  int64_t D = w.numel, R = D ? x.numel / D : 0;
  if (w.dtype != x.dtype || x.ndim() < 1 || D != x.dim(-1) || rstd.dtype != DType::F32 || rstd.numel != R) {
    throw OpError("rmsnormBackward: w must be [D] of x's dtype and rstd float32 [rows]");
  }
  const void* dres = nullptr;
  if (info.Length() > 4 && !info[4].IsUndefined() && !info[4].IsNull()) {
    TensorImpl& r = CudaTensorArg(info, 4);
    NeedSame("rmsnormBackward", r, x);
    dres = r.data<void>();
  }
  Out dx = NewTensor(info.Env(), x.dtype, x.shape, Device::CUDA);
  Out dw = NewTensor(info.Env(), DType::F32, {D}, Device::CUDA);
  Scratch partial(cuda::RmsnormPartialRows(R) * D * sizeof(double));
  cuda::RmsnormBackward(x.dtype, dy.data<void>(), x.data<void>(), w.data<void>(), rstd.data<float>(), dres, dx.t->data<void>(),
                        dw.t->data<float>(), partial.as<double>(), R, D);
  return Results(info.Env(), {dx.value, dw.value});
}

// rope(x, positions, invFreq: Float64Array, attentionScaling, inverse)
Napi::Value Rope(const Napi::CallbackInfo& info) {
  TensorImpl& x = CudaTensorArg(info, 0);
  TensorImpl& pos = CudaTensorArg(info, 1);
  NeedFloat("rope", x);
  const std::vector<float> f = InvFreqArg<float>(info, 2, "rope");
  if (x.ndim() != 3 || pos.dtype != DType::I32 || pos.numel != x.dim(0)) throw OpError("rope: x must be [T,H,Dh] with int32 positions[T]");
  int64_t T = x.dim(0), H = x.dim(1), Dh = x.dim(2);
  if (Dh % 2 != 0 || static_cast<int64_t>(f.size()) != Dh / 2) throw OpError("rope: head dim must be even and invFreq hold Dh/2 entries");
  Out y = NewTensor(info.Env(), x.dtype, x.shape, Device::CUDA);
  cuda::Rope(x.dtype, x.data<void>(), pos.data<int32_t>(), f.data(), static_cast<float>(NumberArg(info, 3)), BoolArg(info, 4),
             y.t->data<void>(), T, H, Dh);
  return y.value;
}

Napi::Value Swiglu(const Napi::CallbackInfo& info) {
  TensorImpl& g = CudaTensorArg(info, 0);
  TensorImpl& u = CudaTensorArg(info, 1);
  NeedFloat("swiglu", g);
  NeedSame("swiglu", g, u);
  Out h = NewTensor(info.Env(), g.dtype, g.shape, Device::CUDA);
  cuda::Swiglu(g.dtype, {1, g.numel, g.numel}, g.data<void>(), u.data<void>(), h.t->data<void>(), "swiglu");
  return h.value;
}

Napi::Value SwigluBackward(const Napi::CallbackInfo& info) {
  TensorImpl& dh = CudaTensorArg(info, 0);
  TensorImpl& g = CudaTensorArg(info, 1);
  TensorImpl& u = CudaTensorArg(info, 2);
  NeedFloat("swigluBackward", g);
  NeedSame("swigluBackward", g, u);
  NeedSame("swigluBackward", g, dh);
  Out dg = NewTensor(info.Env(), g.dtype, g.shape, Device::CUDA);
  Out du = NewTensor(info.Env(), g.dtype, g.shape, Device::CUDA);
  cuda::SwigluBackward(g.dtype, {1, g.numel, g.numel}, dh.data<void>(), g.data<void>(), u.data<void>(), dg.t->data<void>(),
                       du.t->data<void>(), "swigluBackward");
  return Results(info.Env(), {dg.value, du.value});
}

// The rows of a packed gate|up [R, 2F] (a fused gate/up projection's output); throws naming op.
cuda::SwigluRows PackedRows(const char* op, const TensorImpl& gu) {
  NeedFloat(op, gu);
  if (gu.ndim() != 2 || gu.dim(1) % 2 != 0) throw OpError(std::string(op) + ": gu must be [R, 2F] (gate, then up, in each row)");
  const int64_t width = gu.dim(1) / 2;
  return {gu.dim(0), width, gu.dim(1)};
}

// The up half of a packed [R, 2F] tensor's rows: F elements past each row's gate half.
char* UpHalf(const TensorImpl& t, const cuda::SwigluRows& r) { return t.data<char>() + r.width * DTypeSize(t.dtype); }

// swigluPacked(gu [R, 2F]) -> h [R, F]: swiglu of each row's halves (gate, then up).
Napi::Value SwigluPacked(const Napi::CallbackInfo& info) {
  TensorImpl& gu = CudaTensorArg(info, 0);
  const cuda::SwigluRows r = PackedRows("swigluPacked", gu);
  Out h = NewTensor(info.Env(), gu.dtype, {r.rows, r.width}, Device::CUDA);
  cuda::Swiglu(gu.dtype, r, gu.data<void>(), UpHalf(gu, r), h.t->data<void>(), "swigluPacked");
  return h.value;
}

// swigluPackedBackward(dh [R, F], gu [R, 2F]) -> dgu [R, 2F]: dgate and dup side by side as gu holds gate and up.
Napi::Value SwigluPackedBackward(const Napi::CallbackInfo& info) {
  const char* op = "swigluPackedBackward";
  TensorImpl& dh = CudaTensorArg(info, 0);
  TensorImpl& gu = CudaTensorArg(info, 1);
  const cuda::SwigluRows r = PackedRows(op, gu);
  if (dh.dtype != gu.dtype || dh.ndim() != 2 || dh.dim(0) != r.rows || dh.dim(1) != r.width) throw OpError(std::string(op) + ": dh must be [R, F] of gu's dtype");
  Out dgu = NewTensor(info.Env(), gu.dtype, gu.shape, Device::CUDA);
  cuda::SwigluBackward(gu.dtype, r, dh.data<void>(), gu.data<void>(), UpHalf(gu, r), dgu.t->data<void>(), UpHalf(*dgu.t, r), op);
  return dgu.value;
}

// The per-tensor scalars of torch.optim.AdamW's update at `step` (from 1): decoupled decay,
// step size lr / bc1, and 1 / sqrt(bc2).
struct AdamWScalars {
  float decay, stepSize, invSqrtBc2;
};
AdamWScalars AdamWScalarsOf(double lr, double wd, double step, double b1, double b2) {
  double bc1 = 1 - std::pow(b1, step), bc2 = 1 - std::pow(b2, step);
  return {float(1 - lr * wd), float(lr / bc1), float(1 / std::sqrt(bc2))};
}

// adamwStep(p, g, m, v, lr, beta1, beta2, eps, weightDecay, step, copy?): p, m, v float32;
// g float32 or bfloat16; copy (bfloat16, optional) receives the updated weights.
Napi::Value AdamwStep(const Napi::CallbackInfo& info) {
  TensorImpl& p = CudaTensorArg(info, 0);
  TensorImpl& g = CudaTensorArg(info, 1);
  TensorImpl& m = CudaTensorArg(info, 2);
  TensorImpl& v = CudaTensorArg(info, 3);
  if (p.dtype != DType::F32 || m.dtype != DType::F32 || v.dtype != DType::F32) throw OpError("adamwStep: param, m and v must be float32 on cuda");
  NeedFloat("adamwStep", g);
  if (g.numel != p.numel || m.numel != p.numel || v.numel != p.numel) throw OpError("adamwStep: sizes differ");
  TensorImpl* copy = nullptr;
  if (info.Length() > 10 && !info[10].IsUndefined() && !info[10].IsNull()) {
    copy = &CudaTensorArg(info, 10);
    if (copy->dtype != DType::BF16 || copy->numel != p.numel) throw OpError("adamwStep: copy must be bfloat16 of the param's size");
  }
  double lr = NumberArg(info, 4), b1 = NumberArg(info, 5), b2 = NumberArg(info, 6), eps = NumberArg(info, 7);
  double wd = NumberArg(info, 8), step = NumberArg(info, 9);
  if (step < 1) throw OpError("adamwStep: step counts from 1");
  AdamWScalars k = AdamWScalarsOf(lr, wd, step, b1, b2);
  cuda::AdamW(p.data<float>(), g.dtype, g.data<void>(), m.data<float>(), v.data<float>(), copy ? copy->data<void>() : nullptr, p.numel,
              float(b1), float(b2), float(eps), k.decay, k.stepSize, k.invSqrtBc2);
  return info.Env().Undefined();
}

// An AdamW step over many tensors, checked and laid out for the kernel but not yet launched: the
// trainer prepares it while the device sums the gradients' squares, and launches it once the
// clipping scale is known. It holds the tensors' storage, so none is freed before the launch.
struct PreparedAdamW {
  std::vector<cuda::AdamWItem> items;
  std::vector<std::shared_ptr<Storage>> keep;
  float b1, b2, eps;
  bool launched = false;
};
const napi_type_tag kPreparedAdamWTag = {0x7e55e1a0ad0a11ceULL, 0x9f1c2b3d4e5f6071ULL};

// adamwStepManyPrepare(items, b1, b2, eps) -> prepared: items are [p, g, m, v, copy | null, lr,
// wd, step] arrays; p, g, m, v float32 of one size, copy bfloat16 of that size. Everything is
// checked here, so a bad item changes no tensor.
Napi::Value AdamwStepManyPrepare(const Napi::CallbackInfo& info) {
  const char* op = "adamwStepMany";
  if (!info[0].IsArray()) throw OpError("adamwStepMany: items must be an array");
  Napi::Array arr = info[0].As<Napi::Array>();
  double b1 = NumberArg(info, 1), b2 = NumberArg(info, 2), eps = NumberArg(info, 3);
  auto prepared = std::make_unique<PreparedAdamW>();
  prepared->b1 = float(b1);
  prepared->b2 = float(b2);
  prepared->eps = float(eps);
  prepared->items.reserve(arr.Length());
  std::string item;  // "adamwStepMany: items[k]" for the errors; its buffer is reused from item to item
  for (uint32_t k = 0; k < arr.Length(); k++) {
    item.assign(op).append(": items[").append(std::to_string(k)).append("]");
    Napi::Value entry = arr.Get(k);
    // p, g, m, v, then copy or null; the item's scalars follow.
    std::vector<TensorImpl*> t = TensorList(entry, Device::CUDA, item, /*allowNull=*/true, 5);
    Napi::Array it = entry.As<Napi::Array>();
    const int64_t n = t[0] ? t[0]->numel : 0;
    for (int j = 0; j < 4; j++) {
      if (!t[j] || t[j]->dtype != DType::F32 || t[j]->numel != n) throw OpError(item + ": p, g, m and v must be float32 tensors of one size");
    }
    if (t[4] && (t[4]->dtype != DType::BF16 || t[4]->numel != n)) throw OpError(item + ": copy must be bfloat16 of the param's size");
    auto scalar = [&](uint32_t j, const char* name) {
      Napi::Value v = it.Get(j);
      if (!v.IsNumber()) throw OpError(item + ": " + name + " must be a number");
      return v.As<Napi::Number>().DoubleValue();
    };
    const double lr = scalar(5, "lr"), wd = scalar(6, "weight decay"), step = scalar(7, "step");
    if (!(step >= 1)) throw OpError(item + ": step counts from 1");
    AdamWScalars c = AdamWScalarsOf(lr, wd, step, b1, b2);
    prepared->items.push_back({t[0]->data<float>(), t[1]->data<float>(), t[2]->data<float>(), t[3]->data<float>(), t[4] ? t[4]->data<void>() : nullptr, n,
                               c.decay, c.stepSize, c.invSqrtBc2, 0});
    for (TensorImpl* x : t) if (x) prepared->keep.push_back(x->storage);
  }
  auto ext = Napi::External<PreparedAdamW>::New(info.Env(), prepared.release(), [](Napi::Env, PreparedAdamW* p) { delete p; });
  ext.TypeTag(&kPreparedAdamWTag);
  return ext;
}

// info[0] as a step from adamwStepManyPrepare; anything else is an Error.
PreparedAdamW& PreparedArg(const Napi::CallbackInfo& info) {
  if (!info[0].IsExternal() || !info[0].As<Napi::External<PreparedAdamW>>().CheckTypeTag(&kPreparedAdamWTag)) {
    throw OpError("adamwStepMany: not a prepared step");
  }
  return *info[0].As<Napi::External<PreparedAdamW>>().Data();
}

// adamwStepManyLaunch(prepared, gradScale): the prepared step, every gradient taken times
// gradScale; once. Its tensors' storage is released after the launch is queued.
Napi::Value AdamwStepManyLaunch(const Napi::CallbackInfo& info) {
  PreparedAdamW& p = PreparedArg(info);
  if (p.launched) throw OpError("adamwStepMany: this prepared step was launched already");
  const double gradScale = NumberArg(info, 1);
  p.launched = true;
  cuda::AdamWMany(p.items.data(), static_cast<int>(p.items.size()), p.b1, p.b2, p.eps, float(gradScale));
  // The queued kernel reads the storage later: the caching allocator hands a freed block only to
  // work queued after this on the same stream, so letting go now is safe.
  p.keep.clear();
  return info.Env().Undefined();
}

// adamwStepManyDrop(prepared): lets go of a prepared step that will not run (a skipped update):
// its tensors' storage is released now rather than when the handle is collected. Launching it
// afterwards is refused; dropping a launched step does nothing.
Napi::Value AdamwStepManyDrop(const Napi::CallbackInfo& info) {
  PreparedAdamW& p = PreparedArg(info);
  p.launched = true;
  p.keep.clear();
  return info.Env().Undefined();
}

}  // namespace

void RegisterCudaLossBindings(Napi::Env env, Napi::Object cuda);  // bindings_loss.cc
void RegisterCudaAttentionBindings(Napi::Env env, Napi::Object cuda);  // bindings_attention.cc
void RegisterCudaNnBindings(Napi::Env env, Napi::Object cuda);  // bindings_nn.cc
void RegisterCudaOptimBindings(Napi::Env env, Napi::Object cuda);  // bindings_optim.cc
void RegisterCudaRopeBindings(Napi::Env env, Napi::Object cuda);  // bindings_rope.cc

void RegisterCudaBindings(Napi::Env env, Napi::Object exports) {
  Napi::Object c = Napi::Object::New(env);
  Export(env, c, "init", Init);
  Export(env, c, "memoryStats", MemoryStats);
  Export(env, c, "resetPeak", ResetPeak);
  Export(env, c, "emptyCache", EmptyCache);
  Export(env, c, "setDebugFill", SetDebugFill);
  Export(env, c, "synchronize", Synchronize);
  Export(env, c, "recordEvent", RecordEvent);
  Export(env, c, "waitEvent", WaitEvent);
  Export(env, c, "eventSynchronize", EventSynchronize);
  Export(env, c, "eventElapsedMs", EventElapsedMs);
  Export(env, c, "debugBadLaunch", DebugBadLaunch);
  Export(env, c, "cast", Cast);
  Export(env, c, "matmul", Matmul);
  Export(env, c, "matmulCounts", MatmulCountsOf);
  Export(env, c, "matmulInto", MatmulInto);
  Export(env, c, "addBias", AddBias);
  Export(env, c, "sumRows", SumRows);
  Export(env, c, "copyColumns", CopyColumns);
  Export(env, c, "rmsnormResidual", RmsnormResidual);
  RegisterCudaLossBindings(env, c);
  RegisterCudaAttentionBindings(env, c);
  RegisterCudaNnBindings(env, c);
  RegisterCudaOptimBindings(env, c);
  RegisterCudaRopeBindings(env, c);
  Export(env, c, "add", Add);
  Export(env, c, "mul", Mul);
  Export(env, c, "scale", Scale);
  Export(env, c, "scaleInPlace", ScaleInPlace);
  Export(env, c, "addInto", AddInto);
  Export(env, c, "sumSquares", SumSquares);
  Export(env, c, "sumSquaresManyQueued", SumSquaresManyQueued);
  Export(env, c, "embedding", Embedding);
  Export(env, c, "embeddingBackward", EmbeddingBackward);
  Export(env, c, "embeddingBackwardInto", EmbeddingBackwardInto);
  Export(env, c, "rmsnorm", Rmsnorm);
  Export(env, c, "rmsnormBackward", RmsnormBackward);
  Export(env, c, "rope", Rope);
  Export(env, c, "swiglu", Swiglu);
  Export(env, c, "swigluBackward", SwigluBackward);
  Export(env, c, "swigluPacked", SwigluPacked);
  Export(env, c, "swigluPackedBackward", SwigluPackedBackward);
  Export(env, c, "adamwStep", AdamwStep);
  Export(env, c, "adamwStepManyPrepare", AdamwStepManyPrepare);
  Export(env, c, "adamwStepManyLaunch", AdamwStepManyLaunch);
  Export(env, c, "adamwStepManyDrop", AdamwStepManyDrop);
  exports.Set("cuda", c);
}

}  // namespace tessera
