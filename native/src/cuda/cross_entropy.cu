// The row kernel of the fused linear cross-entropy (bindings_loss.cc runs the chunk loop and
// its GEMMs): per row of a chunk's logits, the loss from a max and log-sum-exp in fp32, and,
// for training, the logits' gradient (softmax - onehot) * gradScale written over the logits.
// Then one block sums the per-row losses and counts in a fixed order (fp64), so the total is
// the same on every run and the host reads it once per call.
// Floor per chunk: reads the [C,V] logits twice (max / sum, then gradient) and writes them once.
// Rows are `ld` apart (ld >= V): a vocabulary that is not a multiple of the vector width runs on
// logits padded to an aligned row; the pad takes no part in the softmax and its gradient is 0.
#include <cmath>

#include "cuda/kernels.h"
#include "cuda/vec.cuh"

namespace tessera::cuda {
namespace {

constexpr int kRowThreads = 512;

// (max, sum of exp(x - max)) of two parts; an empty part has max -inf.
__device__ __forceinline__ void Merge(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) return;
  if (m == -INFINITY) {
    m = m2;
    s = s2;
    return;
  }
  float mx = fmaxf(m, m2);
  s = s * expf(m - mx) + s2 * expf(m2 - mx);
  m = mx;
}

template <class T, int N>
__global__ void __launch_bounds__(kRowThreads) CrossEntropyRowKernel(T* logits, const int32_t* labels, double* loss, int* counted,
                                                                     int64_t V, int64_t ld, int64_t ignoreIndex, float gradScale,
                                                                     bool wantGrad, int* bad) {
  T* row = logits + blockIdx.x * ld;
  const int64_t label = labels[blockIdx.x];
  const int64_t vecs = V / N;
  const bool ignored = label == ignoreIndex;
  if (ignored || label < 0 || label >= V) {
    if (!ignored && threadIdx.x == 0) *bad = 1;
    if (threadIdx.x == 0) {
      loss[blockIdx.x] = 0;
      counted[blockIdx.x] = 0;
    }
    if (!wantGrad) return;
    float zero[N] = {};
    for (int64_t k = threadIdx.x; k < vecs; k += blockDim.x) StoreVec<N>(row + k * N, zero);
    for (int64_t j = vecs * N + threadIdx.x; j < ld; j += blockDim.x) Store(row, j, 0.f);
    return;
  }
  // Read before the gradient pass overwrites it (the block syncs in between).
  const float target = threadIdx.x == 0 ? Load(row, label) : 0.f;

  float m = -INFINITY, s = 0.f;
  for (int64_t k = threadIdx.x; k < vecs; k += blockDim.x) {
    float f[N];
    LoadVec<N>(row + k * N, f);
    float mx = f[0];
#pragma unroll
    for (int i = 1; i < N; ++i) mx = fmaxf(mx, f[i]);
    float part = 0.f;
#pragma unroll
    for (int i = 0; i < N; ++i) part += expf(f[i] - mx);
    Merge(m, s, mx, part);
  }
  for (int64_t j = vecs * N + threadIdx.x; j < V; j += blockDim.x) Merge(m, s, Load(row, j), 1.f);
  for (int o = 16; o > 0; o >>= 1) {
    float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
    Merge(m, s, m2, s2);
  }
  __shared__ float ms[kRowThreads / 32], ss[kRowThreads / 32];
  __shared__ float rowMax, rowSum;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    ms[warp] = m;
    ss[warp] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float M = ms[0], S = ss[0];
    for (int w = 1; w < kRowThreads / 32; ++w) Merge(M, S, ms[w], ss[w]);
    rowMax = M;
    rowSum = S;
    loss[blockIdx.x] = static_cast<double>(M + logf(S)) - static_cast<double>(target);
    counted[blockIdx.x] = 1;
  }
  __syncthreads();
  if (!wantGrad) return;
  const float M = rowMax, scaleOverSum = gradScale / rowSum;
  for (int64_t k = threadIdx.x; k < vecs; k += blockDim.x) {
    float f[N];
    LoadVec<N>(row + k * N, f);
#pragma unroll
    for (int i = 0; i < N; ++i) f[i] = expf(f[i] - M) * scaleOverSum - (k * N + i == label ? gradScale : 0.f);
    StoreVec<N>(row + k * N, f);
  }
  for (int64_t j = vecs * N + threadIdx.x; j < ld; j += blockDim.x) {
    Store(row, j, j < V ? expf(Load(row, j) - M) * scaleOverSum - (j == label ? gradScale : 0.f) : 0.f);
  }
}

constexpr int kTotalThreads = 1024;

__global__ void __launch_bounds__(kTotalThreads) TotalsKernel(const double* loss, const int* counted, int64_t T, double* out) {
  double l = 0, c = 0;
  for (int64_t i = threadIdx.x; i < T; i += kTotalThreads) {
    l += loss[i];
    c += counted[i];
  }
  __shared__ double ls[kTotalThreads], cs[kTotalThreads];
  ls[threadIdx.x] = l;
  cs[threadIdx.x] = c;
  __syncthreads();
  for (int half = kTotalThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      ls[threadIdx.x] += ls[threadIdx.x + half];
      cs[threadIdx.x] += cs[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    out[0] = ls[0];
    out[1] = cs[0];
  }
}

template <class T>
void LaunchRows(void* logits, const int32_t* labels, double* loss, int* counted, int64_t C, int64_t V, int64_t ld,
                int64_t ignoreIndex, float gradScale, bool wantGrad, int* bad) {
  constexpr int N = kVec<T>;
  // Rows start 16-byte aligned only when the row stride is a multiple of the vector width: the
  // caller pads them so (bindings_loss.cc).
  if (ld % N != 0) throw OpError("linearCrossEntropy: logits rows of " + std::to_string(ld) + " elements are not 16-byte aligned");
  CrossEntropyRowKernel<T, N><<<static_cast<unsigned>(C), kRowThreads, 0, ComputeStream()>>>(
      static_cast<T*>(logits), labels, loss, counted, V, ld, ignoreIndex, gradScale, wantGrad, bad);
}

}  // namespace

void CrossEntropyRows(DType dt, void* logits, const int32_t* labels, double* loss, int* counted, int64_t C, int64_t V, int64_t ld,
                      int64_t ignoreIndex, float gradScale, bool wantGrad, int* bad) {
  if (C == 0) return;
  if (C > INT32_MAX) throw OpError("linearCrossEntropy: too many rows in a chunk");
  if (dt == DType::F32) LaunchRows<float>(logits, labels, loss, counted, C, V, ld, ignoreIndex, gradScale, wantGrad, bad);
  else LaunchRows<bf16>(logits, labels, loss, counted, C, V, ld, ignoreIndex, gradScale, wantGrad, bad);
  CheckLaunch("linearCrossEntropy");
}

void CrossEntropyTotals(const double* loss, const int* counted, int64_t T, double* out) {
  TotalsKernel<<<1, kTotalThreads, 0, ComputeStream()>>>(loss, counted, T, out);
  CheckLaunch("linearCrossEntropy");
}

}  // namespace tessera::cuda
