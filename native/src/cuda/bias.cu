// Bias add (y = x + b per row, the forward of q/k/v biases where the GEMM's epilogue does not
// serve) and its gradient, a column sum over rows: fp64 partial sums over fixed row chunks
// (threads along columns, a 16-byte vector each: coalesced), then ColumnSum over the chunks; no
// atomics, so the same every run.
// Floor: add reads x and writes y; sumRows reads dy once.
#include "cuda/column_sum.cuh"
#include "cuda/kernels.h"
#include "cuda/rows.cuh"

namespace tessera::cuda {
namespace {

// Chunks of RowsPerChunk (64) rows: a [8192, N] gradient gives 128 chunks, enough blocks for the
// GPU with a short second pass (ColumnSum) over the chunks.
constexpr int kSumRowsThreads = 128;

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

// A thread sums N adjacent columns (one 16-byte vector where N > 1) over one chunk of rows.
template <class T, int N>
__global__ void SumRowsPartialKernel(const T* dy, double* partial, int64_t rows, int64_t cols, int64_t rowsPerChunk) {
  const int64_t j = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * N;
  if (j >= cols) return;
  const int64_t r0 = blockIdx.y * rowsPerChunk;
  const int64_t r1 = min(rows, r0 + rowsPerChunk);
  double s[N] = {};
#pragma unroll 4
  for (int64_t r = r0; r < r1; ++r) {
    float f[N];
    if constexpr (N > 1) {
      LoadVec<N>(dy + r * cols + j, f);
    } else {
      f[0] = Load(dy, r * cols + j);
    }
#pragma unroll
    for (int e = 0; e < N; ++e) s[e] += f[e];
  }
#pragma unroll
  for (int e = 0; e < N; ++e) partial[blockIdx.y * cols + j + e] = s[e];
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
template <class T>
void LaunchSumRowsPartial(const void* dy, double* partial, int64_t rows, int64_t N, int64_t chunks, cudaStream_t s) {
  constexpr int V = kVec<T>;
  auto* p = static_cast<const T*>(dy);
  const int64_t per = RowsPerChunk(rows);
  auto grid = [&](int64_t width) {
    return dim3(static_cast<unsigned>((N / width + kSumRowsThreads - 1) / kSumRowsThreads), static_cast<unsigned>(chunks));
  };
  if (N % V == 0) SumRowsPartialKernel<T, V><<<grid(V), kSumRowsThreads, 0, s>>>(p, partial, rows, N, per);
  else SumRowsPartialKernel<T, 1><<<grid(1), kSumRowsThreads, 0, s>>>(p, partial, rows, N, per);
}

}  // namespace

void AddBias(DType dt, const void* x, const void* b, void* y, int64_t rows, int64_t N) {
  if (rows * N == 0) return;
  if (dt == DType::F32) LaunchAddBias<float>(x, b, y, rows, N);
  else LaunchAddBias<bf16>(x, b, y, rows, N);
  CheckLaunch("addBias");
}

int64_t SumRowsPartials(int64_t rows) {
  int64_t per = RowsPerChunk(rows);
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
  ColumnSum(partial, out, chunks, N, s);
  CheckLaunch("sumRows");
}

}  // namespace tessera::cuda
