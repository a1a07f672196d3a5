// A plain tiled GEMM (64x64 output tiles, 4x4 per thread, fp32 accumulation, fp32 or bf16
// in and out): correctness first. It is the cuda matmul in builds without cuBLASLt, the
// fallback where cuBLASLt has no algorithm, and the reference the cuBLASLt GEMMs (matmul_lt.cc)
// are tested against (`{ reference: true }`). No tensor cores:
// expect a few percent of the H100's bf16 peak.
// Floor: 2*M*N*K FLOPs (at 989 TFLOP/s bf16 dense, what cuBLASLt should approach).
#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace tessera::cuda {
namespace {

constexpr int kTile = 64;
constexpr int kTileK = 16;

// C[b] = op(A[b]) op(B[b]) (+ beta C[b]) (+ bias); op(A) is [M,K] (A stored [K,M] when ta), op(B) is [K,N] (B stored [N,K] when tb);
// stored rows lda, ldb, ldc elements apart.
template <class T, class U>
__global__ void __launch_bounds__(256) MatmulKernel(const T* A, const T* B, U* C, float beta, const T* bias, int64_t M, int64_t N,
                                                    int64_t K, bool ta, bool tb, int64_t lda, int64_t ldb, int64_t ldc) {
  A += blockIdx.z * lda * (ta ? K : M);
  B += blockIdx.z * ldb * (tb ? N : K);
  C += blockIdx.z * ldc * M;
  __shared__ float As[kTileK][kTile + 1];
  __shared__ float Bs[kTileK][kTile + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t m0 = int64_t(blockIdx.y) * kTile, n0 = int64_t(blockIdx.x) * kTile;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kTileK) {
    for (int e = threadIdx.x; e < kTile * kTileK; e += blockDim.x) {
      int mm = e / kTileK, ka = e % kTileK;
      int64_t m = m0 + mm, k = k0 + ka;
      As[ka][mm] = (m < M && k < K) ? Load(A, ta ? k * lda + m : m * lda + k) : 0.f;
      int kb = e / kTile, nn = e % kTile;
      int64_t n = n0 + nn, k2 = k0 + kb;
      Bs[kb][nn] = (n < N && k2 < K) ? Load(B, tb ? n * ldb + k2 : k2 * ldb + n) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    int64_t m = m0 + ty + 16 * i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      int64_t n = n0 + tx + 16 * j;
      if (n >= N) continue;
      float v = acc[i][j];
      if (bias) v += Load(bias, n);
      if (beta != 0.f) v += beta * Load(C, m * ldc + n);
      Store(C, m * ldc + n, v);
    }
  }
}

template <class T>
void LaunchFor(DType cDt, dim3 grid, cudaStream_t s, const void* a, const void* b, void* c, float beta, const void* bias, int64_t M,
               int64_t N, int64_t K, bool ta, bool tb, const GemmLd& ld) {
  auto* A = static_cast<const T*>(a);
  auto* B = static_cast<const T*>(b);
  auto* bi = static_cast<const T*>(bias);
  if (cDt == DType::F32) MatmulKernel<<<grid, 256, 0, s>>>(A, B, static_cast<float*>(c), beta, bi, M, N, K, ta, tb, ld.a, ld.b, ld.c);
  else MatmulKernel<<<grid, 256, 0, s>>>(A, B, static_cast<T*>(c), beta, bi, M, N, K, ta, tb, ld.a, ld.b, ld.c);
}

}  // namespace

void MatmulInto(DType dt, const void* a, const void* b, DType cDt, void* c, float beta, const void* bias, int64_t batch,
                int64_t M, int64_t N, int64_t K, bool ta, bool tb, const GemmLd& strides) {
  if (batch * M * N == 0) return;
  if (cDt != DType::F32 && cDt != dt) throw OpError("matmul: the output must be float32 or the inputs' dtype");
  cudaStream_t s = ComputeStream();
  const GemmLd ld = strides.For(M, N, K, ta, tb);
  if (K == 0 && beta == 0.f && !bias) {
    const size_t es = DTypeSize(cDt);
    Check("matmul", "cudaMemset2DAsync", cudaMemset2DAsync(c, ld.c * es, 0, N * es, batch * M, s));
    return;
  }
  if ((M + kTile - 1) / kTile > 65535 || batch > 65535) throw OpError("matmul: too many rows or batches for the reference GEMM");
  dim3 grid(static_cast<unsigned>((N + kTile - 1) / kTile), static_cast<unsigned>((M + kTile - 1) / kTile), static_cast<unsigned>(batch));
  if (dt == DType::F32) LaunchFor<float>(cDt, grid, s, a, b, c, beta, bias, M, N, K, ta, tb, ld);
  else LaunchFor<bf16>(cDt, grid, s, a, b, c, beta, bias, M, N, K, ta, tb, ld);
  CheckLaunch("matmul");
}

}  // namespace tessera::cuda
