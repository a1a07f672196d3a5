// Where tensor storage lives, and the few device services the core needs (allocation and
// copies). Implemented by src/cuda/ when the addon is built with CUDA; otherwise by
// core/device_stub.cc, whose every entry point says the build has no CUDA.
#pragma once
#include <cstddef>
#include <functional>

namespace tessera {

// The numeric codes are shared with native/dtype.ts (deviceCode).
enum class Device : int { CPU = 0, CUDA = 1 };

inline const char* DeviceName(Device d) { return d == Device::CUDA ? "cuda" : "cpu"; }

struct DeviceBlock {
  void* data;
  size_t capacity;  // the size class, what goes back to the cache
};

/** Device memory from the caching allocator, ordered on the compute stream. Throws OpError. */
DeviceBlock DeviceAlloc(size_t bytes);
/** Returns a block to the cache; never throws (runs in destructors). */
void DeviceFree(DeviceBlock block) noexcept;
/**
 * Copies bytes between any two of host and device, ordered on the compute stream; returns once
 * dst may be read by the host (a copy to host memory waits for the stream). Throws OpError.
 */
void DeviceCopy(const char* op, void* dst, Device dstDev, const void* src, Device srcDev, size_t bytes);
/** The largest upload DeviceUpload stages through pinned memory. */
constexpr size_t kPinnedUploadBytes = size_t{1} << 20;
/**
 * Host -> device of at most kPinnedUploadBytes without waiting: `fill` writes the bytes into a
 * pinned staging slot (one of a few reused round-robin, each reused only once its last copy is
 * done), which is then copied on the compute stream. Batches (tokens, positions, offsets,
 * labels) go this way; larger uploads go through DeviceCopy.
 */
void DeviceUpload(const char* op, void* dst, size_t bytes, const std::function<void(void*)>& fill);
/** Fills device memory with zero bytes on the compute stream. */
void DeviceZero(const char* op, void* dst, size_t bytes);

}  // namespace tessera
