// Sum of squares (for the global gradient norm): fp64 per thread, per-block partials, then
// one block sums them in order and adds to an accumulator on the device. The grid depends
// only on n, so the result is the same on every run; several tensors add into one
// accumulator and the host reads it once.
// Floor: reads n elements.
#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace tessera::cuda {
namespace {

constexpr int64_t kMaxPartials = 1024;

template <class T>
__global__ void SumSquaresKernel(const T* x, int64_t n, double* partial) {
  double s = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    double v = Load(x, i);
    s += v * v;
  }
  __shared__ double warps[kThreads / 32];
  s = WarpSum(s);
  if (threadIdx.x % 32 == 0) warps[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x < 32) {
    double t = threadIdx.x < kThreads / 32 ? warps[threadIdx.x] : 0.0;
    t = WarpSum(t);
    if (threadIdx.x == 0) partial[blockIdx.x] = t;
  }
}

__global__ void SumPartialsKernel(const double* partial, int64_t count, double* acc) {
  __shared__ double warps[kThreads / 32];
  double s = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  s = WarpSum(s);
  if (threadIdx.x % 32 == 0) warps[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x < 32) {
    double t = threadIdx.x < kThreads / 32 ? warps[threadIdx.x] : 0.0;
    t = WarpSum(t);
    if (threadIdx.x == 0) *acc += t;
  }
}

}  // namespace

int64_t SumSquaresPartials(int64_t n) {
  int64_t blocks = (n + kThreads * 4 - 1) / (kThreads * 4);
  return blocks < 1 ? 1 : (blocks > kMaxPartials ? kMaxPartials : blocks);
}

void SumSquares(DType dt, const void* x, int64_t n, double* partial, double* acc) {
  if (n == 0) return;
  cudaStream_t s = ComputeStream();
  unsigned blocks = static_cast<unsigned>(SumSquaresPartials(n));
  if (dt == DType::F32) SumSquaresKernel<<<blocks, kThreads, 0, s>>>(static_cast<const float*>(x), n, partial);
  else SumSquaresKernel<<<blocks, kThreads, 0, s>>>(static_cast<const bf16*>(x), n, partial);
  CheckLaunch("sumSquares");
  SumPartialsKernel<<<1, kThreads, 0, s>>>(partial, blocks, acc);
  CheckLaunch("sumSquares");
}

}  // namespace tessera::cuda
