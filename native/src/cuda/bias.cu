// Bias add (y = x + b per row, the forward of q/k/v biases where the GEMM's epilogue does not
// serve) and its gradient, a column sum over rows: fp64 partial sums over fixed row chunks
// (threads along columns: coalesced), then a sum over chunks; no atomics, so the same every run.
// Floor: add reads x and writes y; sumRows reads dy once.
#include "cuda/kernels.h"
#include "cuda/vec.cuh"

namespace tessera::cuda {
namespace {

constexpr int64_t kMinRowsPerChunk = 32;
constexpr int64_t kMaxChunks = 65535;  // gridDim.y

int64_t RowsPerChunk(int64_t rows) {
  int64_t need = (rows + kMaxChunks - 1) / kMaxChunks;
  return need > kMinRowsPerChunk ? need : kMinRowsPerChunk;
}

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

template <class T>
__global__ void SumRowsPartialKernel(const T* dy, double* partial, int64_t rows, int64_t cols, int64_t rowsPerChunk) {
  int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= cols) return;
  int64_t r0 = blockIdx.y * rowsPerChunk;
  int64_t r1 = min(rows, r0 + rowsPerChunk);
  double s = 0;
  for (int64_t r = r0; r < r1; ++r) s += Load(dy, r * cols + j);
  partial[blockIdx.y * cols + j] = s;
}

__global__ void SumPartialsKernel(const double* partial, float* out, int64_t chunks, int64_t cols) {
  int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= cols) return;
  double s = 0;
  for (int64_t c = 0; c < chunks; ++c) s += partial[c * cols + j];
  out[j] = static_cast<float>(s);
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
  int64_t chunks = SumRowsPartials(rows);
  unsigned colBlocks = static_cast<unsigned>((N + kThreads - 1) / kThreads);
  dim3 grid(colBlocks, static_cast<unsigned>(chunks));
  if (dt == DType::F32) SumRowsPartialKernel<<<grid, kThreads, 0, s>>>(static_cast<const float*>(dy), partial, rows, N, RowsPerChunk(rows));
  else SumRowsPartialKernel<<<grid, kThreads, 0, s>>>(static_cast<const bf16*>(dy), partial, rows, N, RowsPerChunk(rows));
  CheckLaunch("sumRows");
  SumPartialsKernel<<<colBlocks, kThreads, 0, s>>>(partial, out, chunks, N);
  CheckLaunch("sumRows");
}

}  // namespace tessera::cuda
