// The CUDA runtime of the addon: the device, its two streams, the checks every CUDA call and
// kernel launch goes through, and the caching allocator's figures. Plain C++ (no kernels), so
// both the .cc bindings and the .cu kernel files include it.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/device.h"
#include "core/error.h"

namespace tessera::cuda {

/**
 * Throws OpError "<op>: <what> failed: <CUDA error name>: <string>" unless err is cudaSuccess.
 * Used for every CUDA runtime call.
 */
void Check(const char* op, const char* what, cudaError_t err);
#define TESSERA_CUDA_CHECK(op, call) ::tessera::cuda::Check(op, #call, (call))

/**
 * After each kernel launch: cudaGetLastError (a bad configuration fails here, named by op). With
 * env TESSERA_CUDA_SYNC=1 it also waits for the compute stream, so an asynchronous fault (an
 * illegal address) is reported against the op that caused it rather than at the next sync.
 */
void CheckLaunch(const char* op);

/**
 * Makes the device current and its streams on first use: the device is env TESSERA_CUDA_DEVICE
 * or 0 (a rank process sees its GPU through CUDA_VISIBLE_DEVICES or sets the variable). Throws
 * an OpError naming op when no device is visible.
 */
void EnsureInit(const char* op);

/** Where kernels run; the caching allocator orders its blocks on it. */
cudaStream_t ComputeStream();
/** The device's streaming multiprocessors (132 on an H100 SXM, 114 on a PCIe one): grids that fill the GPU are sized by it. */
int SmCount();
/** For collectives, so that they overlap compute; joined to compute through events. */
cudaStream_t CommStream();

struct MemoryStats {
  size_t allocated;  // bytes of blocks handed out (size classes), live now
  size_t reserved;   // bytes obtained from cudaMalloc, live now (allocated + cached)
  size_t peak;       // the most `allocated` has been since the last ResetPeak
  uint64_t mallocs;  // cudaMalloc calls so far: flat across steps once the cache is warm
  uint64_t frees;    // cudaFree calls so far (EmptyCache, and retries after out-of-memory)
};
MemoryStats GetMemoryStats();
void ResetPeak();
/** Frees every cached block (waits for the device first); returns the bytes given back. */
size_t EmptyCache();
/** When on, fresh blocks are filled with 0xFF bytes (NaN in fp32 and bf16), so a kernel that leaves an element unwritten shows. */
void SetDebugFill(bool on);

/** A device buffer for a kernel's scratch, returned to the cache when it goes out of scope (stream order makes that safe). */
class Scratch {
 public:
  explicit Scratch(size_t bytes) : block_(DeviceAlloc(bytes)) {}
  ~Scratch() { DeviceFree(block_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(block_.data); }

 private:
  DeviceBlock block_;
};

}  // namespace tessera::cuda
