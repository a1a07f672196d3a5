// A small persistent thread pool and its parallel-for. Size: TESSERA_CPU_THREADS, else
// std::thread::hardware_concurrency(). A parallel_for issued from inside a worker runs
// serially, so kernels may nest them freely.
#pragma once
#include <cstdint>
#include <functional>

namespace tessera::cpu {

int NumThreads();

/** Runs fn(begin, end) over [0, n) in chunks of at least `grain` items. */
void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace tessera::cpu

// Hot loops are compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and the baseline; the
// loader picks one at run time: the addon stays portable across the machines it is built on.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TESSERA_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TESSERA_SIMD_CLONES
#endif
#define TESSERA_INLINE inline __attribute__((always_inline))
