// Checks and result shapes the cuda binding files share (bindings*.cc).
#pragma once
#include <initializer_list>
#include <string>

#include "core/tensor.h"

namespace tessera::cuda_bindings {

/** The cuda kernels take float32 and bfloat16. */
inline void NeedFloat(const char* op, const TensorImpl& t) {
  if (t.dtype != DType::F32 && t.dtype != DType::BF16) {
    throw OpError(std::string(op) + ": dtype " + DTypeName(t.dtype) + " is not supported on cuda (float32 or bfloat16)");
  }
}

inline void NeedSame(const char* op, const TensorImpl& a, const TensorImpl& b) {
  if (a.dtype != b.dtype || a.numel != b.numel) throw OpError(std::string(op) + ": inputs differ in dtype or size");
}

/** A binding's several results as one JS array, in order. */
inline Napi::Value Results(Napi::Env env, std::initializer_list<Napi::Value> values) {
  Napi::Array res = Napi::Array::New(env, values.size());
  uint32_t i = 0;
  for (const Napi::Value& v : values) res.Set(i++, v);
  return res;
}

}  // namespace tessera::cuda_bindings
