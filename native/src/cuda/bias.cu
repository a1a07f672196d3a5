// Bias add (y = x + b per row, the forward of q/k/v biases where the GEMM's epilogue does not
// serve) and its gradient, a column sum over rows: fp64 partial sums over fixed row chunks, then
// ColumnSum over the chunks; no atomics, so the same every run.
// Floor: add reads x and writes y; sumRows reads dy once (1.5B: q's [8192, 1536] bf16 is 25 MB,
// 8.4 us at 3 TB/s; k's and v's [8192, 256] are 4 MB, where latency, not bandwidth, sets the time).
#include "cuda/column_sum.cuh"
#include "cuda/kernels.h"
#include "cuda/rows.cuh"

namespace tessera::cuda {
namespace {

// The partial pass. A block is `lanes` column lanes (a 16-byte vector of columns each; 32, or
// fewer for a narrow matrix) by kSumRowsGroups row groups: group g takes rows g, g + 16, ... of
// the block's chunk, kSumRowsInFlight of them loaded at once, so a chunk of 128 rows is one round
// of loads (a [8192, 256] gradient is one round of 64 blocks rather than one thread walking 64
// rows a load at a time). The groups' sums meet in shared memory and are added in group order:
// one partial row per chunk. ColumnSum follows as a dependent launch (ColumnSumAfter).
// Measured at 1.5B (H100, inputs cycled past L2, NOTES 2026-11-24): q 24.9 -> 17.9 us, k/v
// 14.4 -> 7.3 us; 256-row chunks took q to 16.1 us but k/v to 10.0 (32 blocks), 64-row ones
// were slower for both, and the dependent launch saves 1.2-1.3 us a call.
constexpr int kSumRowsGroups = 16;
constexpr int kSumRowsInFlight = 8;
constexpr int kSumRowsMaxLanes = 32;
constexpr int64_t kSumRowsChunk = kSumRowsGroups * kSumRowsInFlight;


// Over vectors of N elements; N divides the row length, so a vector never straddles rows.
template <class T, int N>
__global__ void AddBiasKernel(const T* x, const T* b, T* y, int64_t vecs, int64_t rowVecs) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < vecs; k += int64_t(gridDim.x) * blockDim.x) {
    float xv[N], bv[N];
    LoadVec<N>(x + k * N, xv);
    LoadVec<N>(b + (k % rowVecs) * N, bv);
#pragma unroll
    for (int i = 0; i < N; ++i) xv[i] += bv[i];
    StoreVec<N>(y + k * N, xv);
  }
}

// Block (lanes, groups), grid (strips of lanes * N columns, chunks); N columns a lane.
// Shared memory: the groups' sums, [group][lane][N] doubles.
template <class T, int N>
__global__ void __launch_bounds__(kSumRowsMaxLanes* kSumRowsGroups)
    SumRowsPartialKernel(const T* __restrict__ dy, double* __restrict__ partial, int64_t rows, int64_t cols, int64_t rowsPerChunk) {
  extern __shared__ double groupSums[];
  const int lanes = blockDim.x, lane = threadIdx.x, groups = blockDim.y, g = threadIdx.y;
  const int64_t strip = blockIdx.x * int64_t(lanes) * N;
  const int64_t j = strip + int64_t(lane) * N;
  const int64_t r0 = blockIdx.y * rowsPerChunk;
  const int64_t r1 = min(rows, r0 + rowsPerChunk);
  double s[N] = {};
  if (j < cols) {
    for (int64_t r = r0 + g; r < r1; r += int64_t(groups) * kSumRowsInFlight) {
      // Every load issued before the first add, without branches: a row past the chunk loads the
      // chunk's last row again and is not added.
      Vec<T, N> v[kSumRowsInFlight];
#pragma unroll
      for (int u = 0; u < kSumRowsInFlight; ++u) {
        const int64_t ru = min(r + int64_t(u) * groups, r1 - 1);
        v[u] = *reinterpret_cast<const Vec<T, N>*>(dy + ru * cols + j);
      }
#pragma unroll
      for (int u = 0; u < kSumRowsInFlight; ++u) {
        if (r + int64_t(u) * groups >= r1) break;
        float f[N];
        ToFloat<N>(v[u], f);
#pragma unroll
        for (int e = 0; e < N; ++e) s[e] += f[e];
      }
    }
  }
  const int width = lanes * N;
#pragma unroll
  for (int e = 0; e < N; ++e) groupSums[g * width + lane * N + e] = s[e];
  __syncthreads();
  for (int c = g * lanes + lane; c < width; c += lanes * groups) {
    if (strip + c >= cols) break;
    double t = groupSums[c];
    for (int k = 1; k < groups; ++k) t += groupSums[k * width + c];
    partial[blockIdx.y * cols + strip + c] = t;
  }
}

template <class T>
void LaunchAddBias(const void* x, const void* b, void* y, int64_t rows, int64_t N) {
  constexpr int V = kVec<T>;
  cudaStream_t s = ComputeStream();
  auto* xp = static_cast<const T*>(x);
  auto* bp = static_cast<const T*>(b);
  auto* yp = static_cast<T*>(y);
  if (N % V == 0) AddBiasKernel<T, V><<<GridFor(rows * N / V), kThreads, 0, s>>>(xp, bp, yp, rows * N / V, N / V);
  else AddBiasKernel<T, 1><<<GridFor(rows * N), kThreads, 0, s>>>(xp, bp, yp, rows * N, N);
}

// Vector loads where rows start 16-byte aligned (N a multiple of the vector width).
template <class T, int N>
void LaunchSumRowsPartialOf(const T* dy, double* partial, int64_t rows, int64_t cols, int64_t chunks, cudaStream_t s) {
  const int64_t vecs = cols / N;
  int lanes = kSumRowsMaxLanes;
  while (lanes > 1 && lanes / 2 >= vecs) lanes /= 2;
  const dim3 grid(static_cast<unsigned>((vecs + lanes - 1) / lanes), static_cast<unsigned>(chunks));
  const size_t shared = sizeof(double) * N * lanes * kSumRowsGroups;
  SumRowsPartialKernel<T, N><<<grid, dim3(lanes, kSumRowsGroups), shared, s>>>(dy, partial, rows, cols, RowsPerChunk(rows, kSumRowsChunk));
}

template <class T>
void LaunchSumRowsPartial(const void* dy, double* partial, int64_t rows, int64_t N, int64_t chunks, cudaStream_t s) {
  constexpr int V = kVec<T>;
  auto* p = static_cast<const T*>(dy);
  if (N % V == 0) LaunchSumRowsPartialOf<T, V>(p, partial, rows, N, chunks, s);
  else LaunchSumRowsPartialOf<T, 1>(p, partial, rows, N, chunks, s);
}

}  // namespace

void AddBias(DType dt, const void* x, const void* b, void* y, int64_t rows, int64_t N) {
  if (rows * N == 0) return;
  if (dt == DType::F32) LaunchAddBias<float>(x, b, y, rows, N);
  else LaunchAddBias<bf16>(x, b, y, rows, N);
  CheckLaunch("addBias");
}

int64_t SumRowsPartials(int64_t rows) {
  int64_t per = RowsPerChunk(rows, kSumRowsChunk);
  return rows == 0 ? 1 : (rows + per - 1) / per;
}

void SumRows(DType dt, const void* dy, float* out, double* partial, int64_t rows, int64_t N) {
  if (N == 0) return;
  cudaStream_t s = ComputeStream();
  if (rows == 0) {
    Check("sumRows", "cudaMemsetAsync", cudaMemsetAsync(out, 0, N * sizeof(float), s));
    return;
  }
  const int64_t chunks = SumRowsPartials(rows);
  if (dt == DType::F32) LaunchSumRowsPartial<float>(dy, partial, rows, N, chunks, s);
  else LaunchSumRowsPartial<bf16>(dy, partial, rows, N, chunks, s);
  CheckLaunch("sumRows");
  Check("sumRows", "cudaLaunchKernelEx", ColumnSumAfter(partial, out, chunks, N, s));
  CheckLaunch("sumRows");
}

}  // namespace tessera::cuda
