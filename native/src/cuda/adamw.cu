// AdamW (torch.optim.AdamW), in place on fp32 master weights and fp32 moments, with the
// gradient in fp32 or bf16 and, optionally, the bf16 compute copy of the weights written in
// the same pass. Per tensor; a multi-tensor launch is left for when launch overhead shows.
// Floor: reads p, g, m, v and writes p, m, v (and the bf16 copy): 28 bytes per fp32 element.
#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace tessera::cuda {
namespace {

template <class G>
__global__ void AdamWKernel(float* p, const G* g, float* m, float* v, bf16* copy, int64_t n, float b1, float b2, float eps,
                            float decay, float stepSize, float invSqrtBc2) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float gi = Load(g, i);
    float mi = b1 * m[i] + (1.f - b1) * gi;
    float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float pi = p[i] * decay;
    pi = pi - stepSize * mi / (sqrtf(vi) * invSqrtBc2 + eps);
    p[i] = pi;
    if (copy) copy[i] = __float2bfloat16_rn(pi);
  }
}

}  // namespace

void AdamW(float* p, DType gDt, const void* g, float* m, float* v, void* copy, int64_t n, float b1, float b2, float eps,
           float decay, float stepSize, float invSqrtBc2) {
  if (n == 0) return;
  cudaStream_t s = ComputeStream();
  auto* c = static_cast<bf16*>(copy);
  if (gDt == DType::F32) {
    AdamWKernel<<<GridFor(n), kThreads, 0, s>>>(p, static_cast<const float*>(g), m, v, c, n, b1, b2, eps, decay, stepSize, invSqrtBc2);
  } else {
    AdamWKernel<<<GridFor(n), kThreads, 0, s>>>(p, static_cast<const bf16*>(g), m, v, c, n, b1, b2, eps, decay, stepSize, invSqrtBc2);
  }
  CheckLaunch("adamwStep");
}

}  // namespace tessera::cuda
