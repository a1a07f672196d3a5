// A tensor on the host side of the addon: refcounted storage (views share it), dtype and
// shape. JS holds each tensor as a type-tagged Napi::External; `release` drops its storage
// reference at once (deterministic free), the External's finalizer is only the backstop.
#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace tessera {

/** An error whose message names the op and the problem; bindings turn it into a JS Error. */
struct OpError : std::runtime_error {
  explicit OpError(const std::string& msg) : std::runtime_error(msg) {}
};

/** 64-byte aligned host memory (from the block cache); its size counts toward LiveBytes() while it exists. */
struct Storage {
  explicit Storage(size_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data;
  size_t bytes;
  size_t capacity;
};

int64_t LiveBytes();

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  DType dtype;
  std::vector<int64_t> shape;
  int64_t numel = 0;

  template <class T>
  T* data() const { return static_cast<T*>(storage->data); }
  int64_t dim(int i) const { return shape[i < 0 ? static_cast<int>(shape.size()) + i : i]; }
  int ndim() const { return static_cast<int>(shape.size()); }
};

int64_t Numel(const std::vector<int64_t>& shape);

/** A fresh tensor with uninitialised contents, wrapped for JS. */
struct Out {
  Napi::Value value;
  TensorImpl* t;
};
Out NewTensor(Napi::Env env, DType dtype, std::vector<int64_t> shape);
/** A tensor sharing `base`'s storage under another shape. */
Napi::Value NewView(Napi::Env env, const TensorImpl& base, std::vector<int64_t> shape);

/** The tensor behind a handle (live or released), or nullptr when it is not one of ours. */
TensorImpl* AsTensor(const Napi::Value& v);
/** The live tensor at argument i; throws when it is not a tensor handle or was released. */
TensorImpl& TensorArg(const Napi::CallbackInfo& info, size_t i);
double NumberArg(const Napi::CallbackInfo& info, size_t i);
bool BoolArg(const Napi::CallbackInfo& info, size_t i);
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

}  // namespace tessera
