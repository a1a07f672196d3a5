// AdamW (torch.optim.AdamW), in place on fp32 master weights and fp32 moments, with the
// gradient in fp32 or bf16 and, optionally, the bf16 compute copy of the weights written in
// the same pass. Per tensor (AdamW), or many tensors per launch (AdamWMany: a model's few
// hundred parameters in a handful of launches, the clipping scale folded in so clipped
// gradients are never rewritten).
// Floor: reads p, g, m, v and writes p, m, v (and the bf16 copy): 28 bytes per fp32 element
// (30 with the copy).
#include "cuda/common.cuh"
#include "cuda/kernels.h"
#include "cuda/multi_tensor.h"

namespace tessera::cuda {
namespace {

// One element of torch.optim.AdamW (g already scaled): updates m and v, returns the new weight.
__device__ __forceinline__ float AdamWUpdate(float p, float g, float& m, float& v, float b1, float b2, float eps, float decay,
                                             float stepSize, float invSqrtBc2) {
  m = b1 * m + (1.f - b1) * g;
  v = b2 * v + (1.f - b2) * g * g;
  return p * decay - stepSize * m / (sqrtf(v) * invSqrtBc2 + eps);
}

template <class G>
__global__ void AdamWKernel(float* p, const G* g, float* m, float* v, bf16* copy, int64_t n, float b1, float b2, float eps,
                            float decay, float stepSize, float invSqrtBc2) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float mi = m[i], vi = v[i];
    float pi = AdamWUpdate(p[i], Load(g, i), mi, vi, b1, b2, eps, decay, stepSize, invSqrtBc2);
    m[i] = mi;
    v[i] = vi;
    p[i] = pi;
    if (copy) copy[i] = __float2bfloat16_rn(pi);
  }
}

// One launch over up to kAdamWItems tensors (multi_tensor.h): block b works on chunk
// b - blockStart of the item whose [blockStart, next blockStart) holds b.
using AdamWBatch = ItemBatch<AdamWItem, kAdamWItems>;

constexpr int kChunk = kThreads * 16;  // elements per block

__device__ __forceinline__ void AdamWOne(const AdamWItem& t, int64_t i, float b1, float b2, float eps, float gradScale) {
  float mi = t.m[i], vi = t.v[i];
  float pi = AdamWUpdate(t.p[i], t.g[i] * gradScale, mi, vi, b1, b2, eps, t.decay, t.stepSize, t.invSqrtBc2);
  t.m[i] = mi;
  t.v[i] = vi;
  t.p[i] = pi;
  if (t.copy) static_cast<bf16*>(t.copy)[i] = __float2bfloat16_rn(pi);
}

// Four elements per thread and 16-byte loads where the whole chunk allows (every block from the
// allocator is 256-byte aligned and chunks are multiples of 4); the scalar loop for a ragged end.
__global__ void AdamWManyKernel(AdamWBatch batch, float b1, float b2, float eps, float gradScale) {
  int k = 0;
  while (k + 1 < batch.count && batch.items[k + 1].blockStart <= int64_t(blockIdx.x)) k++;
  const AdamWItem& t = batch.items[k];
  int64_t start = (int64_t(blockIdx.x) - t.blockStart) * kChunk;
  int64_t end = start + kChunk < t.n ? start + kChunk : t.n;
  bool aligned = ((reinterpret_cast<uintptr_t>(t.p) | reinterpret_cast<uintptr_t>(t.g) | reinterpret_cast<uintptr_t>(t.m) |
                   reinterpret_cast<uintptr_t>(t.v)) % 16 == 0) && (reinterpret_cast<uintptr_t>(t.copy) % 8 == 0);
  int64_t vecEnd = aligned ? start + (end - start) / 4 * 4 : start;
  for (int64_t i = start + 4 * threadIdx.x; i < vecEnd; i += 4 * kThreads) {
    float4 p = *reinterpret_cast<const float4*>(t.p + i);
    float4 g = *reinterpret_cast<const float4*>(t.g + i);
    float4 m = *reinterpret_cast<const float4*>(t.m + i);
    float4 v = *reinterpret_cast<const float4*>(t.v + i);
    float pa[4] = {p.x, p.y, p.z, p.w}, ga[4] = {g.x, g.y, g.z, g.w}, ma[4] = {m.x, m.y, m.z, m.w}, va[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) pa[j] = AdamWUpdate(pa[j], ga[j] * gradScale, ma[j], va[j], b1, b2, eps, t.decay, t.stepSize, t.invSqrtBc2);
    *reinterpret_cast<float4*>(t.p + i) = make_float4(pa[0], pa[1], pa[2], pa[3]);
    *reinterpret_cast<float4*>(t.m + i) = make_float4(ma[0], ma[1], ma[2], ma[3]);
    *reinterpret_cast<float4*>(t.v + i) = make_float4(va[0], va[1], va[2], va[3]);
    if (t.copy) {
      __nv_bfloat162 lo = __floats2bfloat162_rn(pa[0], pa[1]);
      __nv_bfloat162 hi = __floats2bfloat162_rn(pa[2], pa[3]);
      uint2 packed = {*reinterpret_cast<uint32_t*>(&lo), *reinterpret_cast<uint32_t*>(&hi)};
      *reinterpret_cast<uint2*>(static_cast<bf16*>(t.copy) + i) = packed;
    }
  }
  for (int64_t i = vecEnd + threadIdx.x; i < end; i += kThreads) AdamWOne(t, i, b1, b2, eps, gradScale);
}

}  // namespace

void AdamWMany(AdamWItem* items, int count, float b1, float b2, float eps, float gradScale) {
  cudaStream_t s = ComputeStream();
  LaunchInBatches<kAdamWItems>(items, count, kChunk, [&](const AdamWBatch& batch, int64_t blocks) {
    AdamWManyKernel<<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(batch, b1, b2, eps, gradScale);
    CheckLaunch("adamwStepMany");
  });
}

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
