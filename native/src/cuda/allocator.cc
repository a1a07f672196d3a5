// The stream-ordered caching device allocator. cudaMalloc and cudaFree synchronise the device
// and cost far more than a kernel, and a training step frees and reallocates the same sizes
// every step; so freed blocks are kept by size class, per stream, and handed out again. A
// block freed while kernels that use it are still queued is safe to reuse on the same stream:
// whatever the next owner launches there runs after them. (A block used on another stream
// must be recorded there first, as PyTorch's record_stream does; nothing does that yet.)
// Blocks are never split: size classes are multiples of 512 bytes up to 1 MiB and quarter
// powers of two above (at most 25% slack).
#include <map>
#include <mutex>
#include <unordered_map>

#include "cuda/runtime.h"

namespace tessera::cuda {
namespace {

size_t SizeClass(size_t n) {
  constexpr size_t kSmall = size_t{1} << 20;
  if (n <= kSmall) return n <= 512 ? 512 : (n + 511) / 512 * 512;
  int top = 63 - __builtin_clzll(n);
  size_t step = size_t{1} << (top - 2);
  return (n + step - 1) / step * step;
}

struct Pool {
  std::mutex mu;
  std::unordered_map<cudaStream_t, std::multimap<size_t, void*>> cached;
  std::unordered_map<void*, cudaStream_t> streamOf;
  size_t cachedBytes = 0;
  MemoryStats stats{};
  bool debugFill = false;
};

Pool& ThePool() {
  static Pool* pool = new Pool();  // never destroyed: tensors may be finalised at exit
  return *pool;
}

// Frees every cached block; the caller holds the lock.
size_t ReleaseCached(Pool& p) {
  size_t freed = 0;
  for (auto& [stream, blocks] : p.cached) {
    for (auto& [size, ptr] : blocks) {
      cudaFree(ptr);  // errors here are not actionable: the memory is gone either way
      p.streamOf.erase(ptr);
      p.stats.reserved -= size;
      p.stats.frees++;
      freed += size;
    }
    blocks.clear();
  }
  p.cachedBytes = 0;
  return freed;
}

}  // namespace

MemoryStats GetMemoryStats() {
  Pool& p = ThePool();
  std::lock_guard<std::mutex> lk(p.mu);
  return p.stats;
}

void ResetPeak() {
  Pool& p = ThePool();
  std::lock_guard<std::mutex> lk(p.mu);
  p.stats.peak = p.stats.allocated;
}

size_t EmptyCache() {
  Pool& p = ThePool();
  std::lock_guard<std::mutex> lk(p.mu);
  if (p.cachedBytes == 0) return 0;
  Check("emptyCache", "cudaDeviceSynchronize", cudaDeviceSynchronize());
  return ReleaseCached(p);
}

void SetDebugFill(bool on) {
  Pool& p = ThePool();
  std::lock_guard<std::mutex> lk(p.mu);
  p.debugFill = on;
}

}  // namespace tessera::cuda

namespace tessera {

DeviceBlock DeviceAlloc(size_t bytes) {
  using namespace cuda;
  cudaStream_t stream = ComputeStream();
  size_t cls = SizeClass(bytes);
  Pool& p = ThePool();
  std::lock_guard<std::mutex> lk(p.mu);
  void* ptr = nullptr;
  auto& mine = p.cached[stream];
  auto it = mine.find(cls);
  if (it != mine.end()) {
    ptr = it->second;
    mine.erase(it);
    p.cachedBytes -= cls;
  } else {
    cudaError_t err = cudaMalloc(&ptr, cls);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      cudaDeviceSynchronize();
      ReleaseCached(p);
      err = cudaMalloc(&ptr, cls);
    }
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      throw OpError("cuda: out of device memory allocating " + std::to_string(bytes) + " bytes (allocated " +
                    std::to_string(p.stats.allocated) + ", reserved " + std::to_string(p.stats.reserved) +
                    "): " + cudaGetErrorString(err));
    }
    p.streamOf[ptr] = stream;
    p.stats.reserved += cls;
    p.stats.mallocs++;
  }
  p.stats.allocated += cls;
  if (p.stats.allocated > p.stats.peak) p.stats.peak = p.stats.allocated;
  if (p.debugFill) {
    cudaError_t err = cudaMemsetAsync(ptr, 0xff, cls, stream);
    if (err != cudaSuccess) {
      mine.emplace(cls, ptr);
      p.cachedBytes += cls;
      p.stats.allocated -= cls;
      Check("cuda allocator", "cudaMemsetAsync (debug fill)", err);
    }
  }
  return {ptr, cls};
}

void DeviceFree(DeviceBlock block) noexcept {
  if (!block.data) return;
  cuda::Pool& p = cuda::ThePool();
  std::lock_guard<std::mutex> lk(p.mu);
  auto owner = p.streamOf.find(block.data);
  if (owner == p.streamOf.end()) return;
  p.cached[owner->second].emplace(block.capacity, block.data);
  p.cachedBytes += block.capacity;
  p.stats.allocated -= block.capacity;
}

}  // namespace tessera
