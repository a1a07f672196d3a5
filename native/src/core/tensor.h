// A tensor on the host side of the addon: refcounted storage (views share it), dtype and
// shape. JS holds each tensor as a type-tagged Napi::External; `release` drops its storage
// reference at once (deterministic free), the External's finalizer is only the backstop.
#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/column_parts.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

namespace tessera {

/**
 * 64-byte aligned host memory (from the host block cache) or device memory (from the caching
 * device allocator); its size counts toward LiveBytes(device) while it exists.
 */
struct Storage {
  explicit Storage(size_t bytes, Device device = Device::CPU);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data;
  size_t bytes;
  size_t capacity;
  Device device;
};

int64_t LiveBytes(Device device = Device::CPU);

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  DType dtype;
  std::vector<int64_t> shape;
  int64_t numel = 0;
  /** Bytes from the storage's start to element 0 (a viewRows view; 0 otherwise). */
  size_t offset = 0;

  template <class T>
  T* data() const { return reinterpret_cast<T*>(static_cast<char*>(storage->data) + offset); }
  int64_t dim(int i) const { return shape[i < 0 ? static_cast<int>(shape.size()) + i : i]; }
  int ndim() const { return static_cast<int>(shape.size()); }
  Device device() const { return storage->device; }
  size_t bytes() const { return static_cast<size_t>(numel) * DTypeSize(dtype); }
};

int64_t Numel(const std::vector<int64_t>& shape);

/** A fresh tensor with uninitialised contents, wrapped for JS. */
struct Out {
  Napi::Value value;
  TensorImpl* t;
};
Out NewTensor(Napi::Env env, DType dtype, std::vector<int64_t> shape, Device device = Device::CPU);
/** A tensor sharing `base`'s storage under another shape. */
Napi::Value NewView(Napi::Env env, const TensorImpl& base, std::vector<int64_t> shape);
/** A tensor sharing `base`'s storage from `offset` bytes past the storage's start (the caller checks the bounds). */
Napi::Value NewViewAt(Napi::Env env, const TensorImpl& base, std::vector<int64_t> shape, size_t offset);

/** The tensor behind a handle (live or released), or nullptr when it is not one of ours. */
TensorImpl* AsTensor(const Napi::Value& v);
/**
 * The live host tensor at argument i; throws when it is not a tensor handle, was released, or
 * lives on a device (CPU kernels must never dereference device pointers).
 */
TensorImpl& TensorArg(const Napi::CallbackInfo& info, size_t i);
/** The live tensor at argument i, on whichever device. */
TensorImpl& AnyTensorArg(const Napi::CallbackInfo& info, size_t i);
/** The live CUDA tensor at argument i. */
TensorImpl& CudaTensorArg(const Napi::CallbackInfo& info, size_t i);
/**
 * The tensors behind a JS array of handles, in order: each live and on `device`, or nullptr for a
 * null or undefined entry where allowNull. With `count`, only the first count entries are read
 * (an array that holds other values after its handles). Errors name `what` (the op and the
 * array: "splitColumns: parts") and the entry; dtypes and shapes are the caller's to check.
 */
std::vector<TensorImpl*> TensorList(const Napi::Value& list, Device device, const std::string& what, bool allowNull = false,
                                    std::optional<uint32_t> count = std::nullopt);
/**
 * copyColumns' parts (the array at argument i): 2-D tensors on one's device and of its dtype,
 * with one's rows, whose widths add up to one's (2-D) width; at most kMaxColumnParts of them.
 * Errors name op (the TypeScript op the caller called: splitColumns, catRows, ...).
 */
std::vector<TensorImpl*> ColumnPartsArg(const Napi::CallbackInfo& info, size_t i, const TensorImpl& one, const std::string& op);
double NumberArg(const Napi::CallbackInfo& info, size_t i);
bool BoolArg(const Napi::CallbackInfo& info, size_t i);
/** An optional flag at argument i: true only when it is given as true (absent, undefined or null: false). */
bool OptionalFlagArg(const Napi::CallbackInfo& info, size_t i);
std::vector<int64_t> ShapeArg(const Napi::CallbackInfo& info, size_t i);

using Binding = Napi::Value (*)(const Napi::CallbackInfo&);
/** Exports `fn` under `name`, turning C++ exceptions into JS Errors. */
void Export(Napi::Env env, Napi::Object exports, const char* name, Binding fn);

/** Calls f.template operator()<T>() with T = float or double for the tensor's dtype. */
template <class F>
void DispatchFloat(const char* op, DType d, F&& f) {
  if (d == DType::F32) f(float{});
  else if (d == DType::F64) f(double{});
  else throw OpError(std::string(op) + ": dtype " + DTypeName(d) + " is not supported (float32 or float64)");
}

void RegisterTensorBindings(Napi::Env env, Napi::Object exports);
void RegisterElementwiseBindings(Napi::Env env, Napi::Object exports);
void RegisterNnBindings(Napi::Env env, Napi::Object exports);
void RegisterAttentionBindings(Napi::Env env, Napi::Object exports);
void RegisterLossBindings(Napi::Env env, Napi::Object exports);
void RegisterOptimBindings(Napi::Env env, Napi::Object exports);
/** Sets exports.cuda to the CUDA ops (only in builds with CUDA). */
void RegisterCudaBindings(Napi::Env env, Napi::Object exports);

}  // namespace tessera
