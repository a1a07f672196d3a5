// The shape rule of ropeWithTable / ropeBackwardWithTable, shared by the CPU and CUDA bindings.
#pragma once
#include <string>

#include "core/tensor.h"

namespace tessera {

/** x is [T,H,Dh] with Dh even and the table [T, 2, Dh/2] of tableDtype; `table` words the table in the error. */
inline void CheckRopeTable(const char* op, const TensorImpl& x, const TensorImpl& t, DType tableDtype, const char* table) {
  if (x.ndim() != 3 || x.dim(2) % 2 != 0 || t.dtype != tableDtype || t.ndim() != 3 || t.dim(0) != x.dim(0) || t.dim(1) != 2 ||
      t.dim(2) != x.dim(2) / 2) {
    throw OpError(std::string(op) + ": x must be [T,H,Dh] (Dh even) and the table " + table);
  }
}

}  // namespace tessera
