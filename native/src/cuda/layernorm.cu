// LayerNorm forward and backward: one warp per row (rows of D elements, fp32 accumulation), the
// layout of rmsnorm.cu.
// Forward: mean and rstd = 1/sqrt(var + eps) (fp32, per row), y = (x - mean) * rstd * w + b.
// Where D is a whole number of 16-byte vectors (8 bf16, 4 fp32) and a warp can hold the row in
// registers (D <= 512 vectors), the row is read once and the variance is summed about the mean
// from the registers (two-pass, so no E[x^2] - mean^2 cancellation); other shapes take the
// scalar kernel, which reads the row three times.
// Backward: xhat = (x - mean) * rstd, g = dy * w: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),
// dw = sum over rows of dy * xhat, db = sum over rows of dy. The vector kernel (D <= 256
// vectors) forms dx, dw and db in one pass: a fixed grid of warps walks the rows (row r to warp
// r mod warps), each lane sums its columns' dw and db in fp32 registers, each block adds its
// warps in a fixed order (fp64) into one partial row of each, and ColumnSum sums the blocks.
// The scalar path writes dx per warp and the partials over fixed row chunks in a second pass.
// No atomics: the same on every run.
// Floor: forward reads x and writes y (R*D each); backward reads dy and x and writes dx.
#include "cuda/column_sum.cuh"
#include "cuda/kernels.h"
#include "cuda/rows.cuh"

namespace tessera::cuda {
namespace {

constexpr int kMaxFwdVecsPerLane = 16;
// Two fp32 accumulators (dw, db) per element a lane holds: 8 vectors of 8 bf16 are 128 registers.
constexpr int kMaxBwdVecsPerLane = 8;
// Blocks of the vector backward: enough to fill the GPU twice, and so the partial rows to sum.
int64_t BwdBlocks(int64_t rows) { return WalkingBlocks(rows, 2 * int64_t(SmCount())); }

template <class T>
__global__ void LayernormKernel(const T* x, const T* w, const T* b, T* y, float* mean, float* rstd, int64_t rows, int64_t D,
                                float eps) {
  const int64_t r = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const T* xr = x + r * D;
  float s = 0.f;
  for (int64_t j = lane; j < D; j += 32) s += Load(xr, j);
  const float mu = WarpSum(s) / float(D);
  float ss = 0.f;
  for (int64_t j = lane; j < D; j += 32) {
    const float c = Load(xr, j) - mu;
    ss += c * c;
  }
  const float rs = 1.f / sqrtf(WarpSum(ss) / float(D) + eps);
  if (lane == 0) {
    mean[r] = mu;
    rstd[r] = rs;
  }
  T* yr = y + r * D;
  for (int64_t j = lane; j < D; j += 32) Store(yr, j, (Load(xr, j) - mu) * rs * Load(w, j) + Load(b, j));
}

// Lane l holds the row's vectors l, l + 32, ...; NV bounds how many (the row's vectors / 32, rounded up).
template <class T, int NV>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) LayernormVecKernel(const T* x, const T* w, const T* b, T* y, float* mean,
                                                                          float* rstd, int64_t rows, int64_t D, float eps) {
  constexpr int N = kVec<T>;
  using VT = Vec<T, N>;
  const int64_t r = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const int64_t vecs = D / N;
  const VT* xr = reinterpret_cast<const VT*>(x + r * D);
  VT v[NV];
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int64_t k = lane + 32 * i;
    if (k >= vecs) break;
    v[i] = xr[k];
    float f[N];
    ToFloat<N>(v[i], f);
#pragma unroll
    for (int e = 0; e < N; ++e) s += f[e];
  }
  const float mu = WarpSum(s) / float(D);
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    if (lane + 32 * i >= vecs) break;
    float f[N];
    ToFloat<N>(v[i], f);
#pragma unroll
    for (int e = 0; e < N; ++e) ss += (f[e] - mu) * (f[e] - mu);
  }
  const float rs = 1.f / sqrtf(WarpSum(ss) / float(D) + eps);
  if (lane == 0) {
    mean[r] = mu;
    rstd[r] = rs;
  }
  VT* yr = reinterpret_cast<VT*>(y + r * D);
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int64_t k = lane + 32 * i;
    if (k >= vecs) break;
    float f[N], wf[N], bf[N];
    ToFloat<N>(v[i], f);
    LoadVec<N>(w + k * N, wf);
    LoadVec<N>(b + k * N, bf);
#pragma unroll
    for (int e = 0; e < N; ++e) f[e] = (f[e] - mu) * rs * wf[e] + bf[e];
    yr[k] = FromFloat<N, T>(f);
  }
}

template <class T>
__global__ void LayernormDxKernel(const T* dy, const T* x, const T* w, const float* mean, const float* rstd, T* dx, int64_t rows,
                                  int64_t D) {
  const int64_t r = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const T* gr = dy + r * D;
  const T* xr = x + r * D;
  const float mu = mean[r], rs = rstd[r];
  float sg = 0.f, sgx = 0.f;
  for (int64_t j = lane; j < D; j += 32) {
    const float gw = Load(gr, j) * Load(w, j);
    sg += gw;
    sgx += gw * (Load(xr, j) - mu) * rs;
  }
  sg = WarpSum(sg) / float(D);
  sgx = WarpSum(sgx) / float(D);
  T* o = dx + r * D;
  for (int64_t j = lane; j < D; j += 32) {
    const float xh = (Load(xr, j) - mu) * rs;
    Store(o, j, rs * (Load(gr, j) * Load(w, j) - sg - xh * sgx));
  }
}

// partialW[chunk, j] = sum over the chunk's rows of dy * xhat, partialB[chunk, j] of dy (threads along j: coalesced).
template <class T>
__global__ void LayernormDwDbPartialKernel(const T* dy, const T* x, const float* mean, const float* rstd, double* partialW,
                                           double* partialB, int64_t rows, int64_t D, int64_t rowsPerChunk) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= D) return;
  const int64_t r0 = blockIdx.y * rowsPerChunk;
  const int64_t r1 = min(rows, r0 + rowsPerChunk);
  double sw = 0, sb = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const float g = Load(dy, r * D + j);
    sw += double(g * ((Load(x, r * D + j) - mean[r]) * rstd[r]));
    sb += g;
  }
  partialW[blockIdx.y * D + j] = sw;
  partialB[blockIdx.y * D + j] = sb;
}

// The register budget: two CTAs an SM while the accumulators fit in 128 registers, one beyond.
template <class T, int NV>
__global__ void __launch_bounds__(kWarpsPerBlock * 32, NV * kVec<T> <= 32 ? 2 : 1)
    LayernormBackwardVecKernel(const T* dy, const T* x, const T* w, const float* mean, const float* rstd, T* dx, double* partialW,
                               double* partialB, int64_t rows, int64_t D) {
  constexpr int N = kVec<T>;
  using VT = Vec<T, N>;
  extern __shared__ double blockSums[];  // dw [D], then db [D]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t vecs = D / N;
  const int64_t warps = int64_t(gridDim.x) * kWarpsPerBlock;
  float accW[NV][N] = {}, accB[NV][N] = {};
  for (int64_t r = blockIdx.x * int64_t(kWarpsPerBlock) + warp; r < rows; r += warps) {
    const VT* gr = reinterpret_cast<const VT*>(dy + r * D);
    const VT* xr = reinterpret_cast<const VT*>(x + r * D);
    const float mu = mean[r], rs = rstd[r];
    float sg = 0.f, sgx = 0.f;
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int64_t k = lane + 32 * i;
      if (k >= vecs) break;
      float gf[N], xf[N], wf[N];
      ToFloat<N>(gr[k], gf);
      ToFloat<N>(xr[k], xf);
      LoadVec<N>(w + k * N, wf);
#pragma unroll
      for (int e = 0; e < N; ++e) {
        const float xh = (xf[e] - mu) * rs;
        const float gw = gf[e] * wf[e];
        sg += gw;
        sgx += gw * xh;
      }
    }
    sg = WarpSum(sg) / float(D);
    sgx = WarpSum(sgx) / float(D);
    VT* o = reinterpret_cast<VT*>(dx + r * D);
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int64_t k = lane + 32 * i;
      if (k >= vecs) break;
      // A re-read of what this warp just loaded: served from L1, not memory.
      float gf[N], xf[N], wf[N];
      ToFloat<N>(gr[k], gf);
      ToFloat<N>(xr[k], xf);
      LoadVec<N>(w + k * N, wf);
#pragma unroll
      for (int e = 0; e < N; ++e) {
        const float xh = (xf[e] - mu) * rs;
        accW[i][e] += gf[e] * xh;
        accB[i][e] += gf[e];
        gf[e] = rs * (gf[e] * wf[e] - sg - xh * sgx);
      }
      o[k] = FromFloat<N, T>(gf);
    }
  }
  // The block's warps add into shared memory one after another: a fixed order.
  for (int wi = 0; wi < kWarpsPerBlock; ++wi) {
    if (warp == wi) {
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        const int64_t k = lane + 32 * i;
        if (k >= vecs) break;
#pragma unroll
        for (int e = 0; e < N; ++e) {
          double* sw = blockSums + k * N + e;
          double* sb = sw + D;
          *sw = (wi == 0 ? 0.0 : *sw) + accW[i][e];
          *sb = (wi == 0 ? 0.0 : *sb) + accB[i][e];
        }
      }
    }
    __syncthreads();
  }
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    partialW[blockIdx.x * D + j] = blockSums[j];
    partialB[blockIdx.x * D + j] = blockSums[D + j];
  }
}

template <class T>
bool LaunchVecForward(const void* x, const void* w, const void* b, void* y, float* mean, float* rstd, int64_t rows, int64_t D,
                      float eps) {
  auto* xp = static_cast<const T*>(x);
  auto* wp = static_cast<const T*>(w);
  auto* bp = static_cast<const T*>(b);
  auto* yp = static_cast<T*>(y);
  dim3 grid(RowBlocks(rows)), block(kWarpsPerBlock * 32);
  cudaStream_t s = ComputeStream();
  switch (VecsPerLane<T>(D)) {
    case 1: LayernormVecKernel<T, 1><<<grid, block, 0, s>>>(xp, wp, bp, yp, mean, rstd, rows, D, eps); return true;
    case 2: LayernormVecKernel<T, 2><<<grid, block, 0, s>>>(xp, wp, bp, yp, mean, rstd, rows, D, eps); return true;
    case 4: LayernormVecKernel<T, 4><<<grid, block, 0, s>>>(xp, wp, bp, yp, mean, rstd, rows, D, eps); return true;
    case 8: LayernormVecKernel<T, 8><<<grid, block, 0, s>>>(xp, wp, bp, yp, mean, rstd, rows, D, eps); return true;
    case 16: LayernormVecKernel<T, kMaxFwdVecsPerLane><<<grid, block, 0, s>>>(xp, wp, bp, yp, mean, rstd, rows, D, eps); return true;
    default: return false;
  }
}

template <class T>
bool LaunchVecBackward(const void* dy, const void* x, const void* w, const float* mean, const float* rstd, void* dx,
                       double* partialW, double* partialB, int64_t rows, int64_t D) {
  auto* dyp = static_cast<const T*>(dy);
  auto* xp = static_cast<const T*>(x);
  auto* wp = static_cast<const T*>(w);
  auto* dxp = static_cast<T*>(dx);
  dim3 grid(static_cast<unsigned>(BwdBlocks(rows))), block(kWarpsPerBlock * 32);
  size_t smem = 2 * D * sizeof(double);
  cudaStream_t s = ComputeStream();
#define TESSERA_LN_BWD(NV) \
  LayernormBackwardVecKernel<T, NV><<<grid, block, smem, s>>>(dyp, xp, wp, mean, rstd, dxp, partialW, partialB, rows, D)
  switch (VecsPerLane<T>(D)) {
    case 1: TESSERA_LN_BWD(1); return true;
    case 2: TESSERA_LN_BWD(2); return true;
    case 4: TESSERA_LN_BWD(4); return true;
    case 8: TESSERA_LN_BWD(kMaxBwdVecsPerLane); return true;
    default: return false;
  }
#undef TESSERA_LN_BWD
}

template <class T>
void LaunchScalarForward(const void* x, const void* w, const void* b, void* y, float* mean, float* rstd, int64_t rows, int64_t D,
                         float eps) {
  LayernormKernel<<<RowBlocks(rows), kWarpsPerBlock * 32, 0, ComputeStream()>>>(
      static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b), static_cast<T*>(y), mean, rstd, rows, D, eps);
}

template <class T>
void LaunchScalarBackward(const void* dy, const void* x, const void* w, const float* mean, const float* rstd, void* dx,
                          double* partialW, double* partialB, int64_t rows, int64_t D, int64_t chunks) {
  auto* dyp = static_cast<const T*>(dy);
  auto* xp = static_cast<const T*>(x);
  cudaStream_t s = ComputeStream();
  LayernormDxKernel<<<RowBlocks(rows), kWarpsPerBlock * 32, 0, s>>>(dyp, xp, static_cast<const T*>(w), mean, rstd,
                                                                     static_cast<T*>(dx), rows, D);
  CheckLaunch("layernormBackward");
  dim3 colGrid(static_cast<unsigned>((D + kThreads - 1) / kThreads), static_cast<unsigned>(chunks));
  LayernormDwDbPartialKernel<<<colGrid, kThreads, 0, s>>>(dyp, xp, mean, rstd, partialW, partialB, rows, D, RowsPerChunk(rows));
}

}  // namespace

int64_t LayernormPartialRows(int64_t rows) {
  int64_t per = RowsPerChunk(rows);
  int64_t chunks = rows == 0 ? 1 : (rows + per - 1) / per;
  int64_t blocks = BwdBlocks(rows);
  return chunks > blocks ? chunks : blocks;
}

void Layernorm(DType dt, const void* x, const void* w, const void* b, void* y, float* mean, float* rstd, int64_t rows, int64_t D,
               float eps) {
  if (rows == 0 || D == 0) return;
  bool vec = dt == DType::F32 ? LaunchVecForward<float>(x, w, b, y, mean, rstd, rows, D, eps)
                              : LaunchVecForward<bf16>(x, w, b, y, mean, rstd, rows, D, eps);
  if (!vec && dt == DType::F32) LaunchScalarForward<float>(x, w, b, y, mean, rstd, rows, D, eps);
  else if (!vec) LaunchScalarForward<bf16>(x, w, b, y, mean, rstd, rows, D, eps);
  CheckLaunch("layernorm");
}

void LayernormBackward(DType dt, const void* dy, const void* x, const void* w, const float* mean, const float* rstd, void* dx,
                       float* dw, float* db, double* partial, int64_t rows, int64_t D) {
  if (D == 0) return;
  cudaStream_t s = ComputeStream();
  if (rows == 0) {
    Check("layernormBackward", "cudaMemsetAsync", cudaMemsetAsync(dw, 0, D * sizeof(float), s));
    Check("layernormBackward", "cudaMemsetAsync", cudaMemsetAsync(db, 0, D * sizeof(float), s));
    return;
  }
  double* partialW = partial;
  double* partialB = partial + LayernormPartialRows(rows) * D;
  bool vec = dt == DType::F32 ? LaunchVecBackward<float>(dy, x, w, mean, rstd, dx, partialW, partialB, rows, D)
                              : LaunchVecBackward<bf16>(dy, x, w, mean, rstd, dx, partialW, partialB, rows, D);
  int64_t chunks = BwdBlocks(rows);
  if (!vec) {
    chunks = (rows + RowsPerChunk(rows) - 1) / RowsPerChunk(rows);
    if (dt == DType::F32) LaunchScalarBackward<float>(dy, x, w, mean, rstd, dx, partialW, partialB, rows, D, chunks);
    else LaunchScalarBackward<bf16>(dy, x, w, mean, rstd, dx, partialW, partialB, rows, D, chunks);
  }
  CheckLaunch("layernormBackward");
  ColumnSum(partialW, dw, chunks, D, s);
  ColumnSum(partialB, db, chunks, D, s);
  CheckLaunch("layernormBackward");
}

}  // namespace tessera::cuda
