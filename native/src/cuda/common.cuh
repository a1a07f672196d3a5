// Shared by the kernel files: bf16/fp32 loads and stores (bf16 is storage only: kernels
// compute in fp32), launch geometry and warp reductions.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/runtime.h"

namespace tessera::cuda {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float Load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float Load(const bf16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void Store(float* p, int64_t i, float v) { p[i] = v; }
// Round to nearest even, as the CPU's FloatToBf16.
__device__ __forceinline__ void Store(bf16* p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }

constexpr int kThreads = 256;

/** Blocks for a grid-stride loop over n elements: enough to fill the GPU, never more than needed. */
inline unsigned GridFor(int64_t n, int threads = kThreads) {
  int64_t blocks = (n + threads - 1) / threads;
  const int64_t kMax = int64_t(SmCount()) * 32;  // grid-stride beyond 32 blocks an SM
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMax ? kMax : blocks));
}

/**
 * Launches kernel as a programmatic dependent launch of the kernel queued before it on s: on
 * compute capability 9.0 the GPU sets its blocks up while that kernel drains, and they wait for
 * it at WaitForPrerequisite (which the kernel must call before reading that kernel's output).
 * Returns the launch's status.
 */
template <class... Params, class... Args>
cudaError_t LaunchDependent(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t s, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.stream = s;
  cudaLaunchAttribute attr = {};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...);
}

/** In a kernel started by LaunchDependent: waits for the kernel before it (a no-op under a plain launch). */
__device__ __forceinline__ void WaitForPrerequisite() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/** In a kernel followed by a LaunchDependent one: lets that kernel's blocks start now (they still wait for this grid's writes at WaitForPrerequisite). */
__device__ __forceinline__ void AllowDependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ double WarpSum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/** The sum of s over a block of kThreads threads, in a fixed order; valid in thread 0. Once a kernel. */
__device__ __forceinline__ double BlockSum(double s) {
  __shared__ double warps[kThreads / 32];
  s = WarpSum(s);
  if (threadIdx.x % 32 == 0) warps[threadIdx.x / 32] = s;
  __syncthreads();
  double t = 0;
  if (threadIdx.x < 32) {
    t = threadIdx.x < kThreads / 32 ? warps[threadIdx.x] : 0.0;
    t = WarpSum(t);
  }
  return t;
}

}  // namespace tessera::cuda
