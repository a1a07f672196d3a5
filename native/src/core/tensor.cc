#include "core/tensor.h"

#include <atomic>
#include <cstdlib>

#include "core/host_alloc.h"

namespace tessera {
namespace {

std::atomic<int64_t> gLiveBytes{0};
std::atomic<int64_t> gLiveDeviceBytes{0};
// Host bytes freed since V8 was last told. V8 sees native memory only through
// AdjustExternalMemory; keeping it informed lets it collect leaked tensors (the backstop) under
// memory pressure. Frees happen where no env is at hand, so they are reported at the next
// allocation. Device bytes are not reported: V8 starts a full collection whenever external
// memory grows 64 MB past its last one, so one step's activations on a GPU would cost a GC every
// few ops, and collecting host objects does nothing for device memory the model frees itself.
std::atomic<int64_t> gUnreportedFrees{0};

// Marks our Externals so that a foreign External passed as a tensor is refused, not read.
const napi_type_tag kTensorTag = {0x7e55e4a0c0de4d1aULL, 0x9b1f5c3e2a7d6b80ULL};

void Finalize(Napi::Env, TensorImpl* t) { delete t; }

Napi::Value Wrap(Napi::Env env, TensorImpl* t) {
  auto ext = Napi::External<TensorImpl>::New(env, t, Finalize);
  ext.TypeTag(&kTensorTag);
  return ext;
}

}  // namespace

Storage::Storage(size_t n, Device dev) : bytes(n), device(dev) {
  if (dev == Device::CUDA) {
    DeviceBlock b = DeviceAlloc(n);
    data = b.data;
    capacity = b.capacity;
    gLiveDeviceBytes += static_cast<int64_t>(n);
    return;
  }
  HostBlock b;
  try {
    b = HostAlloc(n);
  } catch (const std::bad_alloc&) {
    throw OpError("out of host memory allocating " + std::to_string(n) + " bytes");
  }
  data = b.data;
  capacity = b.capacity;
  gLiveBytes += static_cast<int64_t>(n);
}

Storage::~Storage() {
  if (device == Device::CUDA) {
    DeviceFree({data, capacity});
    gLiveDeviceBytes -= static_cast<int64_t>(bytes);
  } else {
    HostFree({data, capacity});
    gLiveBytes -= static_cast<int64_t>(bytes);
    gUnreportedFrees += static_cast<int64_t>(bytes);
  }
}

int64_t LiveBytes(Device device) { return device == Device::CUDA ? gLiveDeviceBytes.load() : gLiveBytes.load(); }

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Out NewTensor(Napi::Env env, DType dtype, std::vector<int64_t> shape, Device device) {
  auto* t = new TensorImpl();
  t->dtype = dtype;
  t->numel = Numel(shape);
  t->shape = std::move(shape);
  size_t bytes = static_cast<size_t>(t->numel) * DTypeSize(dtype);
  try {
    t->storage = std::make_shared<Storage>(bytes, device);
  } catch (...) {
    delete t;
    throw;
  }
  if (device == Device::CPU) Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(bytes) - gUnreportedFrees.exchange(0));
  return {Wrap(env, t), t};
}

Napi::Value NewView(Napi::Env env, const TensorImpl& base, std::vector<int64_t> shape) {
  return NewViewAt(env, base, std::move(shape), base.offset);
}

Napi::Value NewViewAt(Napi::Env env, const TensorImpl& base, std::vector<int64_t> shape, size_t offset) {
  auto* t = new TensorImpl();
  t->dtype = base.dtype;
  t->numel = Numel(shape);
  t->shape = std::move(shape);
  t->storage = base.storage;
  t->offset = offset;
  return Wrap(env, t);
}

TensorImpl* AsTensor(const Napi::Value& v) {
  if (!v.IsExternal() || !v.As<Napi::External<TensorImpl>>().CheckTypeTag(&kTensorTag)) return nullptr;
  return v.As<Napi::External<TensorImpl>>().Data();
}

TensorImpl& AnyTensorArg(const Napi::CallbackInfo& info, size_t i) {
  TensorImpl* t = AsTensor(info[i]);
  if (!t) throw OpError("argument " + std::to_string(i) + " is not a tensor handle");
  if (!t->storage) throw OpError("argument " + std::to_string(i) + " is a disposed tensor");
  return *t;
}

std::vector<TensorImpl*> TensorList(const Napi::Value& list, Device device, const std::string& what, bool allowNull,
                                    std::optional<uint32_t> count) {
  if (!list.IsArray()) throw OpError(what + " must be an array");
  auto arr = list.As<Napi::Array>();
  std::vector<TensorImpl*> ts(count ? *count : arr.Length(), nullptr);
  for (uint32_t i = 0; i < ts.size(); ++i) {
    Napi::Value v = arr.Get(i);
    TensorImpl* t = AsTensor(v);
    if (!t && allowNull && (v.IsNull() || v.IsUndefined())) continue;
    if (!t || !t->storage || t->device() != device) {
      throw OpError(what + "[" + std::to_string(i) + "] is not a live " + DeviceName(device) + " tensor");
    }
    ts[i] = t;
  }
  return ts;
}

std::vector<TensorImpl*> ColumnPartsArg(const Napi::CallbackInfo& info, size_t i, const TensorImpl& one, const std::string& op) {
  std::vector<TensorImpl*> parts = TensorList(info[i], one.device(), op + ": parts");
  if (parts.empty() || parts.size() > static_cast<size_t>(kMaxColumnParts)) {
    throw OpError(op + ": 1 to " + std::to_string(kMaxColumnParts) + " parts, got " + std::to_string(parts.size()));
  }
  if (one.ndim() != 2) throw OpError(op + ": the whole must be 2-D");
  int64_t width = 0;
  for (size_t p = 0; p < parts.size(); ++p) {
    const TensorImpl& t = *parts[p];
    if (t.dtype != one.dtype || t.ndim() != 2 || t.dim(0) != one.dim(0)) {
      throw OpError(op + ": parts[" + std::to_string(p) + "] is not a 2-D tensor with the whole's rows and dtype");
    }
    width += t.dim(1);
  }
  if (width != one.dim(1)) throw OpError(op + ": the parts' widths add up to " + std::to_string(width) + ", not the whole's " + std::to_string(one.dim(1)));
  return parts;
}

TensorImpl& TensorArg(const Napi::CallbackInfo& info, size_t i) {
  TensorImpl& t = AnyTensorArg(info, i);
  if (t.device() != Device::CPU) throw OpError("argument " + std::to_string(i) + " is a cuda tensor; this kernel runs on the CPU");
  return t;
}

TensorImpl& CudaTensorArg(const Napi::CallbackInfo& info, size_t i) {
  TensorImpl& t = AnyTensorArg(info, i);
  if (t.device() != Device::CUDA) throw OpError("argument " + std::to_string(i) + " is a cpu tensor; this kernel runs on cuda");
  return t;
}

double NumberArg(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsNumber()) throw OpError("argument " + std::to_string(i) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

bool BoolArg(const Napi::CallbackInfo& info, size_t i) { return info[i].ToBoolean().Value(); }

bool OptionalFlagArg(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && info[i].IsBoolean() && info[i].As<Napi::Boolean>().Value();
}

std::vector<int64_t> ShapeArg(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsArray()) throw OpError("argument " + std::to_string(i) + " must be a shape array");
  auto a = info[i].As<Napi::Array>();
  std::vector<int64_t> shape(a.Length());
  for (uint32_t k = 0; k < a.Length(); ++k) {
    Napi::Value d = a.Get(k);
    if (!d.IsNumber()) throw OpError("shape entries must be numbers");
    shape[k] = d.As<Napi::Number>().Int64Value();
    if (shape[k] < 0) throw OpError("shape entries must be >= 0");
  }
  return shape;
}

void Export(Napi::Env env, Napi::Object exports, const char* name, Binding fn) {
  exports.Set(name, Napi::Function::New(
                        env,
                        [fn](const Napi::CallbackInfo& info) -> Napi::Value {
                          try {
                            return fn(info);
                          } catch (const Napi::Error&) {
                            throw;
                          } catch (const std::exception& e) {
                            throw Napi::Error::New(info.Env(), e.what());
                          }
                        },
                        name));
}

}  // namespace tessera
