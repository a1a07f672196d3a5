// The last step of the fixed-order column sums (RMSNorm's dw, the bias gradient): partial[c, j]
// for chunks c < chunks summed over c into out[j] (fp32) in fp64. A block takes 32 columns
// (a warp's lanes: coalesced rows of the partials) and splits the chunks over its warps (8 by
// default; warp w takes chunks w, w + 8, ...; four of them in flight at a time, into four sums that are
// added in a fixed order), then adds the warps in order: the same sum every run, and enough
// loads in flight that the read is not latency-bound (a model's 1536 columns are only 48 blocks).
#pragma once
#include "cuda/common.cuh"

namespace tessera::cuda {
namespace {

constexpr int kColumnSumWarps = 8;

template <int kWarps>
__global__ void __launch_bounds__(kWarps * 32) ColumnSumKernel(const double* partial, float* out, int64_t chunks, int64_t cols) {
  __shared__ double part[kWarps][32];
  // Launched by ColumnSumAfter: wait here for the kernel that wrote the partials (a no-op otherwise).
  WaitForPrerequisite();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t j = blockIdx.x * int64_t(32) + lane;
  double s = 0;
  if (j < cols) {
    constexpr int kInFlight = 4;
    double acc[kInFlight] = {};
    int64_t c = warp;
    for (; c + (kInFlight - 1) * kWarps < chunks; c += kInFlight * kWarps) {
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) acc[u] += partial[(c + u * kWarps) * cols + j];
    }
    for (; c < chunks; c += kWarps) acc[0] += partial[c * cols + j];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) s += acc[u];
  }
  part[warp][lane] = s;
  __syncthreads();
  if (warp == 0 && j < cols) {
    double t = part[0][lane];
    for (int w = 1; w < kWarps; ++w) t += part[w][lane];
    out[j] = static_cast<float>(t);
  }
}

inline void ColumnSum(const double* partial, float* out, int64_t chunks, int64_t cols, cudaStream_t s) {
  ColumnSumKernel<kColumnSumWarps><<<static_cast<unsigned>((cols + 31) / 32), kColumnSumWarps * 32, 0, s>>>(partial, out, chunks, cols);
}

/**
 * ColumnSum as a programmatic dependent launch of the kernel before it on s (LaunchDependent),
 * with kWarps warps a block (more where a short sum over many chunks follows a short kernel:
 * RMSNorm's dw). Returns the launch's status.
 */
template <int kWarps = kColumnSumWarps>
cudaError_t ColumnSumAfter(const double* partial, float* out, int64_t chunks, int64_t cols, cudaStream_t s) {
  return LaunchDependent(ColumnSumKernel<kWarps>, dim3(static_cast<unsigned>((cols + 31) / 32)), dim3(kWarps * 32), s, partial, out,
                         chunks, cols);
}

}  // namespace
}  // namespace tessera::cuda
