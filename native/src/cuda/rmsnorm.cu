// RMSNorm forward and backward: one warp per row (rows of D elements, fp32 accumulation).
// The weight gradient is a column sum over rows, done by a second kernel in fixed row chunks
// (fp64 partials, then a sum over chunks): no atomics, so it is the same on every run.
// Floor: forward reads x (R*D) and writes y (R*D); backward reads dy and x twice (dx pass,
// dw pass) and writes dx.
#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace tessera::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int64_t kMinRowsPerChunk = 64;
constexpr int64_t kMaxChunks = 65535;  // gridDim.y

int64_t RowsPerChunk(int64_t rows) {
  int64_t need = (rows + kMaxChunks - 1) / kMaxChunks;
  return need > kMinRowsPerChunk ? need : kMinRowsPerChunk;
}

template <class T>
__global__ void RmsnormKernel(const T* x, const T* w, T* y, float* rstd, int64_t rows, int64_t D, float eps) {
  int64_t r = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const T* xr = x + r * D;
  float ss = 0.f;
  for (int64_t j = lane; j < D; j += 32) {
    float v = Load(xr, j);
    ss += v * v;
  }
  ss = WarpSum(ss);
  float rs = 1.f / sqrtf(ss / float(D) + eps);
  if (lane == 0) rstd[r] = rs;
  T* yr = y + r * D;
  for (int64_t j = lane; j < D; j += 32) Store(yr, j, Load(xr, j) * rs * Load(w, j));
}

// dx = rstd * (g - x * rstd^2 * mean(g * x)), g = dy * w.
template <class T>
__global__ void RmsnormDxKernel(const T* dy, const T* x, const T* w, const float* rstd, T* dx, int64_t rows, int64_t D) {
  int64_t r = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const T* gr = dy + r * D;
  const T* xr = x + r * D;
  float dot = 0.f;
  for (int64_t j = lane; j < D; j += 32) dot += Load(gr, j) * Load(w, j) * Load(xr, j);
  dot = WarpSum(dot);
  float rs = rstd[r];
  float c3 = rs * rs * rs * dot / float(D);
  T* o = dx + r * D;
  for (int64_t j = lane; j < D; j += 32) Store(o, j, rs * (Load(gr, j) * Load(w, j)) - c3 * Load(xr, j));
}

// partial[chunk, j] = sum over the chunk's rows of dy * x * rstd (threads along j: coalesced).
template <class T>
__global__ void RmsnormDwPartialKernel(const T* dy, const T* x, const float* rstd, double* partial, int64_t rows, int64_t D,
                                       int64_t rowsPerChunk) {
  int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= D) return;
  int64_t r0 = blockIdx.y * rowsPerChunk;
  int64_t r1 = min(rows, r0 + rowsPerChunk);
  double s = 0;
  for (int64_t r = r0; r < r1; ++r) s += double(Load(dy, r * D + j) * Load(x, r * D + j)) * rstd[r];
  partial[blockIdx.y * D + j] = s;
}

__global__ void SumChunksKernel(const double* partial, float* dw, int64_t chunks, int64_t D) {
  int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= D) return;
  double s = 0;
  for (int64_t c = 0; c < chunks; ++c) s += partial[c * D + j];
  dw[j] = static_cast<float>(s);
}

unsigned RowBlocks(int64_t rows) { return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock); }

}  // namespace

int64_t RmsnormPartialRows(int64_t rows) {
  int64_t per = RowsPerChunk(rows);
  return rows == 0 ? 1 : (rows + per - 1) / per;
}

void Rmsnorm(DType dt, const void* x, const void* w, void* y, float* rstd, int64_t rows, int64_t D, float eps) {
  if (rows == 0 || D == 0) return;
  cudaStream_t s = ComputeStream();
  if (dt == DType::F32) {
    RmsnormKernel<<<RowBlocks(rows), kWarpsPerBlock * 32, 0, s>>>(static_cast<const float*>(x), static_cast<const float*>(w), static_cast<float*>(y), rstd, rows, D, eps);
  } else {
    RmsnormKernel<<<RowBlocks(rows), kWarpsPerBlock * 32, 0, s>>>(static_cast<const bf16*>(x), static_cast<const bf16*>(w), static_cast<bf16*>(y), rstd, rows, D, eps);
  }
  CheckLaunch("rmsnorm");
}

void RmsnormBackward(DType dt, const void* dy, const void* x, const void* w, const float* rstd, void* dx, float* dw,
                     double* partial, int64_t rows, int64_t D) {
  if (D == 0) return;
  cudaStream_t s = ComputeStream();
  if (rows == 0) {
    Check("rmsnormBackward", "cudaMemsetAsync", cudaMemsetAsync(dw, 0, D * sizeof(float), s));
    return;
  }
  int64_t chunks = RmsnormPartialRows(rows);
  dim3 colGrid(static_cast<unsigned>((D + kThreads - 1) / kThreads), static_cast<unsigned>(chunks));
  unsigned colBlocks = static_cast<unsigned>((D + kThreads - 1) / kThreads);
  if (dt == DType::F32) {
    auto* dyp = static_cast<const float*>(dy);
    auto* xp = static_cast<const float*>(x);
    RmsnormDxKernel<<<RowBlocks(rows), kWarpsPerBlock * 32, 0, s>>>(dyp, xp, static_cast<const float*>(w), rstd, static_cast<float*>(dx), rows, D);
    CheckLaunch("rmsnormBackward");
    RmsnormDwPartialKernel<<<colGrid, kThreads, 0, s>>>(dyp, xp, rstd, partial, rows, D, RowsPerChunk(rows));
  } else {
    auto* dyp = static_cast<const bf16*>(dy);
    auto* xp = static_cast<const bf16*>(x);
    RmsnormDxKernel<<<RowBlocks(rows), kWarpsPerBlock * 32, 0, s>>>(dyp, xp, static_cast<const bf16*>(w), rstd, static_cast<bf16*>(dx), rows, D);
    CheckLaunch("rmsnormBackward");
    RmsnormDwPartialKernel<<<colGrid, kThreads, 0, s>>>(dyp, xp, rstd, partial, rows, D, RowsPerChunk(rows));
  }
  CheckLaunch("rmsnormBackward");
  SumChunksKernel<<<colBlocks, kThreads, 0, s>>>(partial, dw, chunks, D);
  CheckLaunch("rmsnormBackward");
}

}  // namespace tessera::cuda
