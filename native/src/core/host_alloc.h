// Host memory for tensors, with a cache of freed blocks. Fresh large allocations come from
// mmap and page-fault on first touch, which costs more than a memory-bound kernel itself;
// a training step frees and reallocates the same sizes every step, so freed blocks are kept
// by size class (quarter powers of two: at most 25% slack) up to a byte limit
// (env TESSERA_CPU_CACHE_BYTES, default 2 GiB) and handed out again.
#pragma once
#include <cstddef>

namespace tessera {

struct HostBlock {
  void* data;
  size_t capacity;  // the size class, what goes back to the cache
};

HostBlock HostAlloc(size_t bytes);
void HostFree(HostBlock block);
/** Frees every cached block; returns the bytes given back. */
size_t HostEmptyCache();
size_t HostCachedBytes();

}  // namespace tessera
