#include "core/host_alloc.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

namespace tessera {
namespace {

size_t SizeClass(size_t n) {
  if (n <= 256) return 256;
  int top = 63 - __builtin_clzll(n);
  size_t step = size_t{1} << (top - 2);
  return (n + step - 1) / step * step;
}

size_t LimitFromEnv() {
  if (const char* s = std::getenv("TESSERA_CPU_CACHE_BYTES")) return static_cast<size_t>(std::strtoull(s, nullptr, 10));
  return size_t{2} << 30;
}

struct Cache {
  std::mutex mu;
  std::multimap<size_t, void*> blocks;
  size_t bytes = 0;
  size_t limit = LimitFromEnv();
};

Cache& TheCache() {
  static Cache* cache = new Cache();  // never destroyed: tensors may be finalised at exit
  return *cache;
}

}  // namespace

HostBlock HostAlloc(size_t bytes) {
  size_t cls = SizeClass(bytes);
  Cache& c = TheCache();
  {
    std::lock_guard<std::mutex> lk(c.mu);
    auto it = c.blocks.find(cls);
    if (it != c.blocks.end()) {
      void* p = it->second;
      c.blocks.erase(it);
      c.bytes -= cls;
      return {p, cls};
    }
  }
  void* p = std::aligned_alloc(64, cls);
  if (!p) {
    HostEmptyCache();
    p = std::aligned_alloc(64, cls);
  }
  if (!p) throw std::bad_alloc();
  return {p, cls};
}

void HostFree(HostBlock block) {
  Cache& c = TheCache();
  {
    std::lock_guard<std::mutex> lk(c.mu);
    if (c.bytes + block.capacity <= c.limit) {
      c.blocks.emplace(block.capacity, block.data);
      c.bytes += block.capacity;
      return;
    }
  }
  std::free(block.data);
}

size_t HostEmptyCache() {
  Cache& c = TheCache();
  std::lock_guard<std::mutex> lk(c.mu);
  size_t freed = c.bytes;
  for (auto& [size, p] : c.blocks) std::free(p);
  c.blocks.clear();
  c.bytes = 0;
  return freed;
}

size_t HostCachedBytes() {
  Cache& c = TheCache();
  std::lock_guard<std::mutex> lk(c.mu);
  return c.bytes;
}

}  // namespace tessera
