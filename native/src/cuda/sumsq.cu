// Sum of squares (for the global gradient norm) over many tensors in one launch (a model's
// few hundred; more take more): the tensors are cut into fixed chunks, one block per chunk sums
// its squares in fp64 into a partial, and one block then sums the partials in order. The
// chunking depends only on the tensors' sizes, so the result is the same on every run; the
// host reads one number.
// Floor: reads every element once (a 1.5B-parameter fp32 gradient: 6.2 GB, 2.1 ms at 3 TB/s).
// Two launches per tensor paid launches and tails for each of a model's tensors, most of them
// small (norm weights, biases): the whole 1.5B model's norm took 4.55 ms that way, 2.34 ms in
// four launches (NOTES.md, "Other kernels this evening").
#include <vector>

#include "cuda/common.cuh"
#include "cuda/kernels.h"
#include "cuda/multi_tensor.h"
#include "cuda/vec.cuh"

namespace tessera::cuda {
namespace {

// Each thread issues kSumVecs 16-byte loads before any use (a load waited on at once keeps one
// vector a thread in flight), kSumRounds times a block: long-lived blocks and few partials.
// Measured on the 1.5B gradients (NOTES.md, 2026-11-24): 4 x 8 1.99 ms; fp32 squares instead of
// fp64 no faster (2.00).
constexpr int kSumVecs = 4;
constexpr int kSumRounds = 8;
constexpr int64_t kChunk = int64_t(kThreads) * 4 * kSumVecs * kSumRounds;  // elements per block (fp32: 128 KB)
constexpr int kItems = 768;  // tensors per launch: a whole model's in one parameter (multi_tensor.h)

struct Item {
  const void* x;
  int64_t n;
  int64_t blockStart;
  int bf16;
};

using Batch = ItemBatch<Item, kItems>;
static_assert(sizeof(Batch) + sizeof(double*) <= 32764, "SumSquaresManyKernel's parameters must fit CUDA's 32,764-byte limit");

template <class T>
__device__ __forceinline__ Vec<T, kVec<T>> LoadStreaming(const T* p) {
  // Read once and never again: evict first (.cs), as the gradients do not fit L2.
  static_assert(sizeof(Vec<T, kVec<T>>) == sizeof(float4));
  float4 raw = __ldcs(reinterpret_cast<const float4*>(p));
  return *reinterpret_cast<Vec<T, kVec<T>>*>(&raw);
}

template <class T>
__device__ __forceinline__ double ChunkSum(const T* x, int64_t start, int64_t end) {
  constexpr int N = kVec<T>;
  double s = 0;
  // Tensors start 16-byte aligned (the allocator's blocks, viewRows' cuda views); checked anyway.
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0;
  const int64_t vecEnd = aligned ? start + (end - start) / N * N : start;
  for (int64_t base = start + int64_t(N) * threadIdx.x; base < vecEnd; base += int64_t(N) * kThreads * kSumVecs) {
    Vec<T, N> v[kSumVecs];
#pragma unroll
    for (int j = 0; j < kSumVecs; ++j) {
      const int64_t i = base + int64_t(j) * N * kThreads;
      if (i < vecEnd) v[j] = LoadStreaming(x + i);
    }
#pragma unroll
    for (int j = 0; j < kSumVecs; ++j) {
      if (base + int64_t(j) * N * kThreads < vecEnd) {
        float f[N];
        ToFloat(v[j], f);
#pragma unroll
        for (int e = 0; e < N; ++e) s += double(f[e]) * double(f[e]);
      }
    }
  }
  for (int64_t i = vecEnd + threadIdx.x; i < end; i += kThreads) {
    double v = Load(x, i);
    s += v * v;
  }
  return s;
}

__global__ void SumSquaresManyKernel(Batch batch, double* partial) {
  const Item& t = ItemOfBlock(batch, blockIdx.x);
  const int64_t start = (int64_t(blockIdx.x) - t.blockStart) * kChunk;
  const int64_t end = start + kChunk < t.n ? start + kChunk : t.n;
  double s = t.bf16 ? ChunkSum(static_cast<const bf16*>(t.x), start, end) : ChunkSum(static_cast<const float*>(t.x), start, end);
  s = BlockSum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// One block; each thread keeps kAcc sums so that kAcc loads are in flight (a single chain waits
// on every load in turn), then adds them in a fixed order.
__global__ void SumPartialsKernel(const double* partial, int64_t count, double* out) {
  constexpr int kAcc = 16;
  double acc[kAcc] = {};
  for (int64_t base = threadIdx.x; base < count; base += int64_t(kAcc) * kThreads) {
#pragma unroll
    for (int j = 0; j < kAcc; ++j) {
      const int64_t i = base + int64_t(j) * kThreads;
      if (i < count) acc[j] += partial[i];
    }
  }
  double s = 0;
#pragma unroll
  for (int j = 0; j < kAcc; ++j) s += acc[j];
  s = BlockSum(s);
  if (threadIdx.x == 0) *out = s;
}

int64_t ChunksOf(int64_t n) { return (n + kChunk - 1) / kChunk; }

}  // namespace

int64_t SumSquaresPartials(const SumSquaresInput* in, int count) {
  int64_t blocks = 0;
  for (int i = 0; i < count; ++i) blocks += ChunksOf(in[i].n);
  return blocks < 1 ? 1 : blocks;
}

void SumSquaresMany(const SumSquaresInput* in, int count, double* partial, double* out) {
  cudaStream_t s = ComputeStream();
  std::vector<Item> items;
  for (int i = 0; i < count; ++i) items.push_back(Item{in[i].x, in[i].n, 0, in[i].dt == DType::BF16 ? 1 : 0});
  int64_t done = 0;  // partials written so far (launches fill consecutive ranges)
  LaunchInBatches<kItems>(items.data(), count, kChunk, [&](const Batch& batch, int64_t blocks) {
    SumSquaresManyKernel<<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(batch, partial + done);
    CheckLaunch("sumSquares");
    done += blocks;
  });
  SumPartialsKernel<<<1, kThreads, 0, s>>>(partial, done, out);
  CheckLaunch("sumSquares");
}

}  // namespace tessera::cuda
