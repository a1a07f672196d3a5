// The last step of the fixed-order column sums (RMSNorm's dw, the bias gradient): partial[c, j]
// for chunks c < chunks summed over c into out[j] (fp32) in fp64. A block takes 32 columns
// (a warp's lanes: coalesced rows of the partials) and splits the chunks over its 8 warps
// (warp w takes chunks w, w + 8, ...; four of them in flight at a time, into four sums that are
// added in a fixed order), then adds the warps in order: the same sum every run, and enough
// loads in flight that the read is not latency-bound (a model's 1536 columns are only 48 blocks).
#pragma once
#include "cuda/common.cuh"

namespace tessera::cuda {
namespace {

constexpr int kColumnSumWarps = 8;

__global__ void __launch_bounds__(kColumnSumWarps * 32) ColumnSumKernel(const double* partial, float* out, int64_t chunks, int64_t cols) {
  __shared__ double part[kColumnSumWarps][32];
#if __CUDA_ARCH__ >= 900
  // Launched by ColumnSumAfter: wait here for the kernel that wrote the partials (a no-op otherwise).
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t j = blockIdx.x * int64_t(32) + lane;
  double s = 0;
  if (j < cols) {
    constexpr int kInFlight = 4;
    double acc[kInFlight] = {};
    int64_t c = warp;
    for (; c + (kInFlight - 1) * kColumnSumWarps < chunks; c += kInFlight * kColumnSumWarps) {
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) acc[u] += partial[(c + u * kColumnSumWarps) * cols + j];
    }
    for (; c < chunks; c += kColumnSumWarps) acc[0] += partial[c * cols + j];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) s += acc[u];
  }
  part[warp][lane] = s;
  __syncthreads();
  if (warp == 0 && j < cols) {
    double t = part[0][lane];
    for (int w = 1; w < kColumnSumWarps; ++w) t += part[w][lane];
    out[j] = static_cast<float>(t);
  }
}

inline void ColumnSum(const double* partial, float* out, int64_t chunks, int64_t cols, cudaStream_t s) {
  ColumnSumKernel<<<static_cast<unsigned>((cols + 31) / 32), kColumnSumWarps * 32, 0, s>>>(partial, out, chunks, cols);
}

/**
 * ColumnSum as a programmatic dependent launch (compute capability 9.0): the GPU sets its blocks
 * up while the kernel before it (the one writing the partials) drains, and they wait for it in
 * the kernel, so the launch gap between the two passes overlaps the first one's tail. Returns the
 * launch's status.
 */
inline cudaError_t ColumnSumAfter(const double* partial, float* out, int64_t chunks, int64_t cols, cudaStream_t s) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>((cols + 31) / 32));
  cfg.blockDim = dim3(kColumnSumWarps * 32);
  cfg.stream = s;
  cudaLaunchAttribute attr = {};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, ColumnSumKernel, partial, out, chunks, cols);
}

}  // namespace
}  // namespace tessera::cuda
