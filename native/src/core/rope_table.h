// RoPE's argument rules, shared by the CPU and CUDA bindings: the frequencies' array (rope,
// ropeTable) and the shape rule of ropeWithTable / ropeBackwardWithTable.
#pragma once
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tessera {

/** info[i], the inverse frequencies (a Float64Array), as F values; anything else is an Error naming op. */
template <class F>
std::vector<F> InvFreqArg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    throw OpError(std::string(op) + ": invFreq must be a Float64Array");
  }
  auto a = info[i].As<Napi::Float64Array>();
  return std::vector<F>(a.Data(), a.Data() + a.ElementLength());
}

/** x is [T,H,Dh] with Dh even and the table [T, 2, Dh/2] of tableDtype; `table` words the table in the error. */
inline void CheckRopeTable(const char* op, const TensorImpl& x, const TensorImpl& t, DType tableDtype, const char* table) {
  if (x.ndim() != 3 || x.dim(2) % 2 != 0 || t.dtype != tableDtype || t.ndim() != 3 || t.dim(0) != x.dim(0) || t.dim(1) != 2 ||
      t.dim(2) != x.dim(2) / 2) {
    throw OpError(std::string(op) + ": x must be [T,H,Dh] (Dh even) and the table " + table);
  }
}

}  // namespace tessera
