// AdamW (torch.optim.AdamW), in place on fp32 master weights and fp32 moments, with the
// gradient in fp32 or bf16 and, optionally, the bf16 compute copy of the weights written in
// the same pass. Per tensor (AdamW), or many tensors per launch (AdamWMany: a model's few
// hundred parameters in one launch, the clipping scale folded in so clipped gradients are
// never rewritten).
// Floor: reads p, g, m, v and writes p, m, v (and the bf16 copy): 28 bytes per fp32 element
// (30 with the copy).
#include "cuda/common.cuh"
#include "cuda/kernels.h"
#include "cuda/multi_tensor.h"
#include "cuda/vec.cuh"

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
static_assert(sizeof(AdamWBatch) + 4 * sizeof(float) <= 32764, "AdamWManyKernel's parameters must fit CUDA's 32,764-byte limit");

// Each thread issues its kAdamWVecs 16-byte loads of every stream (p, g, m, v) before any use:
// a loop that stores before its next load keeps one vector a stream in flight, as the compiler
// cannot move a load above a store that may alias it. On the 1.5B parameters (NOTES.md,
// 2026-11-24) this runs at the speed of a kernel moving the same bytes with no arithmetic
// (15.5 ms, 3.0 TB/s); 2 vectors a thread or 2 rounds a block were 0.1-0.3 ms slower.
constexpr int kAdamWVecs = 4;
constexpr int kChunk = kThreads * 4 * kAdamWVecs;  // elements per block

__device__ __forceinline__ void AdamWOne(const AdamWItem& t, int64_t i, float b1, float b2, float eps, float gradScale) {
  float mi = t.m[i], vi = t.v[i];
  float pi = AdamWUpdate(t.p[i], t.g[i] * gradScale, mi, vi, b1, b2, eps, t.decay, t.stepSize, t.invSqrtBc2);
  t.m[i] = mi;
  t.v[i] = vi;
  t.p[i] = pi;
  if (t.copy) static_cast<bf16*>(t.copy)[i] = __float2bfloat16_rn(pi);
}

__device__ __forceinline__ float4 AdamWUpdate4(float4 p, float4 g, float4& m, float4& v, float b1, float b2, float eps, float gradScale,
                                               const AdamWItem& t) {
  p.x = AdamWUpdate(p.x, g.x * gradScale, m.x, v.x, b1, b2, eps, t.decay, t.stepSize, t.invSqrtBc2);
  p.y = AdamWUpdate(p.y, g.y * gradScale, m.y, v.y, b1, b2, eps, t.decay, t.stepSize, t.invSqrtBc2);
  p.z = AdamWUpdate(p.z, g.z * gradScale, m.z, v.z, b1, b2, eps, t.decay, t.stepSize, t.invSqrtBc2);
  p.w = AdamWUpdate(p.w, g.w * gradScale, m.w, v.w, b1, b2, eps, t.decay, t.stepSize, t.invSqrtBc2);
  return p;
}

// 16-byte vectors where the whole chunk allows (every block from the allocator is 256-byte
// aligned and chunks are multiples of 4), the scalar loop for a ragged end. Every element is
// read once and written once, so the loads and stores are streaming (.cs: evict first) and
// leave L2 to the writes in flight.
__global__ void AdamWManyKernel(AdamWBatch batch, float b1, float b2, float eps, float gradScale) {
  const AdamWItem& t = ItemOfBlock(batch, blockIdx.x);
  const int64_t start = (int64_t(blockIdx.x) - t.blockStart) * kChunk;
  const int64_t end = start + kChunk < t.n ? start + kChunk : t.n;
  const bool aligned = ((reinterpret_cast<uintptr_t>(t.p) | reinterpret_cast<uintptr_t>(t.g) | reinterpret_cast<uintptr_t>(t.m) |
                         reinterpret_cast<uintptr_t>(t.v)) % 16 == 0) && (reinterpret_cast<uintptr_t>(t.copy) % 8 == 0);
  const int64_t vecEnd = aligned ? start + (end - start) / 4 * 4 : start;
  const int64_t first = start + 4 * threadIdx.x;
  float4 p[kAdamWVecs], g[kAdamWVecs], m[kAdamWVecs], v[kAdamWVecs];
#pragma unroll
  for (int j = 0; j < kAdamWVecs; ++j) {
    const int64_t i = first + int64_t(j) * 4 * kThreads;
    if (i < vecEnd) {
      p[j] = __ldcs(reinterpret_cast<const float4*>(t.p + i));
      g[j] = __ldcs(reinterpret_cast<const float4*>(t.g + i));
      m[j] = __ldcs(reinterpret_cast<const float4*>(t.m + i));
      v[j] = __ldcs(reinterpret_cast<const float4*>(t.v + i));
    }
  }
#pragma unroll
  for (int j = 0; j < kAdamWVecs; ++j) {
    const int64_t i = first + int64_t(j) * 4 * kThreads;
    if (i < vecEnd) {
      p[j] = AdamWUpdate4(p[j], g[j], m[j], v[j], b1, b2, eps, gradScale, t);
      __stcs(reinterpret_cast<float4*>(t.p + i), p[j]);
      __stcs(reinterpret_cast<float4*>(t.m + i), m[j]);
      __stcs(reinterpret_cast<float4*>(t.v + i), v[j]);
      if (t.copy) {
        const uint2 packed = make_uint2(PackBf16(p[j].x, p[j].y), PackBf16(p[j].z, p[j].w));
        __stcs(reinterpret_cast<uint2*>(static_cast<bf16*>(t.copy) + i), packed);
      }
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
