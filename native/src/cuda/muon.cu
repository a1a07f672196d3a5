// Muon on cuda: Keller Jordan's quintic Newton-Schulz in bf16 with fp32 accumulation (as his
// reference runs it on GPU), and Moonlight's update around it. The contract and the formulas
// are the CPU's (ops_optim.cc):
//   X = G / (|G|_F + 1e-7); `steps` times A = X X^T, B = b A + c A A, X = a X + B X
// with rows <= cols. A tall G [M,N] (M > N) is not transposed: its X^T is kept as stored, and
// the same iteration reads A = X^T X, X = a X + X B (A and B are symmetric), so only the GEMMs'
// transpose flags change.
//
// Each GEMM carries its linear combination in alpha / beta with a separate output (cuBLASLt's
// D = alpha AB + beta C): B = c A A + b A and X' = B X + a X cost no elementwise passes. The
// Frobenius norm stays on the device (per-block fp64 partials in a fixed order, then one block
// turns them into the scale), so nothing waits for the host. Muon's momentum update and the norm's
// partials are one pass; the update of the fp32 master and its bf16 copy another.
// Workspace (X twice, A, B: 2 (2 M N + 2 min(M,N)^2) bytes) comes from the caching allocator.
//
// FLOPs per step, s = min(M,N), l = max(M,N): 4 s^2 l (X X^T, B X) + 2 s^3 (A A).
#include <utility>

#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace tessera::cuda {
namespace {

constexpr float kA = 3.4445f, kB = -4.7750f, kC = 2.0315f;
constexpr int64_t kMaxPartials = 1024;

int64_t PartialsFor(int64_t n) {
  int64_t blocks = (n + kThreads * 4 - 1) / (kThreads * 4);
  return blocks < 1 ? 1 : (blocks > kMaxPartials ? kMaxPartials : blocks);
}

// Where Newton-Schulz's input u comes from: the matrix itself (newtonSchulz5), or Muon's
// momentum buffer after its update (plain, or Nesterov's g + mu*buf).
enum class Source { kInput, kMomentum, kNesterov };

// u from the gradient and the (updated) momentum.
template <Source S>
__device__ __forceinline__ float FromMomentum(float g, float b, float mu) {
  return S == Source::kMomentum ? b : g + mu * b;
}

// The momentum update (Muon) and the per-block sums of u^2, in one pass.
template <Source S, class G>
__global__ void PrepareKernel(const G* g, float* buf, float mu, int64_t n, double* partial) {
  double s = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    double u;
    if constexpr (S == Source::kInput) {
      u = Load(g, i);
    } else {
      float gi = Load(g, i), b = mu * buf[i] + gi;
      buf[i] = b;
      u = FromMomentum<S>(gi, b, mu);
    }
    s += u * u;
  }
  s = BlockSum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// One block: the partials in a fixed order, then the scale 1 / (|u|_F + 1e-7).
__global__ void InverseNormKernel(const double* partial, int64_t count, float* inv) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  const double total = BlockSum(s);
  if (threadIdx.x == 0) *inv = static_cast<float>(1.0 / (sqrt(total) + 1e-7));
}

// X = bf16(u * inv), u read again from the (updated) sources.
template <Source S, class G>
__global__ void NormalizeKernel(const G* g, const float* buf, float mu, const float* inv, bf16* x, int64_t n) {
  const float scale = *inv;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float u;
    if constexpr (S == Source::kInput) u = Load(g, i);
    else u = FromMomentum<S>(Load(g, i), buf[i], mu);
    x[i] = __float2bfloat16_rn(u * scale);
  }
}

// d = alpha t + beta c: the reference path's linear combination (its GEMM has no alpha).
__global__ void AxpbyKernel(const float* t, const bf16* c, bf16* d, float alpha, float beta, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float ci = beta == 0.f ? 0.f : __bfloat162float(c[i]);
    d[i] = __float2bfloat16_rn(alpha * t[i] + beta * ci);
  }
}

// p = p*decay - stepSize*o, and the bf16 copy of the new p.
__global__ void UpdateKernel(float* p, const bf16* o, bf16* copy, int64_t n, float decay, float stepSize) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float pi = p[i] * decay - stepSize * __bfloat162float(o[i]);
    p[i] = pi;
    if (copy) copy[i] = __float2bfloat16_rn(pi);
  }
}

// d[M,N] = alpha op(a) op(b) + beta c, all bf16 (fp32 accumulation): cuBLASLt, or the tiled GEMM
// into fp32 scratch and a pass for the combination.
void Axpby(const bf16* a, const bf16* b, const bf16* c, bf16* d, float alpha, float beta, int64_t M, int64_t N, int64_t K,
           bool ta, bool tb, bool reference) {
#ifdef TESSERA_CUBLASLT
  if (!reference && MatmulLtAxpby(DType::BF16, a, b, DType::BF16, c, d, alpha, beta, 1, M, N, K, ta, tb)) return;
#endif
  Scratch t(static_cast<size_t>(M * N) * sizeof(float));
  MatmulInto(DType::BF16, a, b, DType::F32, t.as<float>(), 0.f, nullptr, 1, M, N, K, ta, tb);
  AxpbyKernel<<<GridFor(M * N), kThreads, 0, ComputeStream()>>>(t.as<float>(), c, d, alpha, beta, M * N);
  CheckLaunch("newtonSchulz5");
}

// The iteration on X [M,N] as stored (normalised, bf16); returns the buffer that holds the
// result (x or y, which it overwrites).
bf16* Iterate(bf16* x, bf16* y, int64_t M, int64_t N, int steps, bool reference) {
  const bool tall = M > N;
  const int64_t s = tall ? N : M;
  Scratch a(static_cast<size_t>(s * s) * sizeof(bf16)), b(static_cast<size_t>(s * s) * sizeof(bf16));
  bf16* A = a.as<bf16>();
  bf16* B = b.as<bf16>();
  for (int k = 0; k < steps; ++k) {
    if (tall) Axpby(x, x, A, A, 1.f, 0.f, s, s, M, true, false, reference);  // A = X^T X
    else Axpby(x, x, A, A, 1.f, 0.f, s, s, N, false, true, reference);       // A = X X^T
    Axpby(A, A, A, B, kC, kB, s, s, s, false, false, reference);              // B = c A A + b A
    if (tall) Axpby(x, B, x, y, 1.f, kA, M, N, s, false, false, reference);  // X' = X B + a X
    else Axpby(B, x, x, y, 1.f, kA, M, N, s, false, false, reference);       // X' = B X + a X
    std::swap(x, y);
  }
  return x;
}

// The normalised input of the iteration into x: the norm's partials (with Muon's momentum update), the scale, X.
template <Source S, class G>
void Normalize(const G* g, float* buf, float mu, bf16* x, int64_t n, const char* op) {
  cudaStream_t st = ComputeStream();
  const int64_t parts = PartialsFor(n);
  Scratch partial(parts * sizeof(double)), inv(sizeof(float));
  PrepareKernel<S><<<static_cast<unsigned>(parts), kThreads, 0, st>>>(g, buf, mu, n, partial.as<double>());
  CheckLaunch(op);
  InverseNormKernel<<<1, kThreads, 0, st>>>(partial.as<double>(), parts, inv.as<float>());
  CheckLaunch(op);
  NormalizeKernel<S><<<GridFor(n), kThreads, 0, st>>>(g, buf, mu, inv.as<float>(), x, n);
  CheckLaunch(op);
}

}  // namespace

void NewtonSchulz(DType gDt, const void* g, DType outDt, void* out, int64_t M, int64_t N, int steps, bool reference) {
  const int64_t n = M * N;
  if (n == 0) return;
  Scratch xs(n * sizeof(bf16)), ys(n * sizeof(bf16));
  if (gDt == DType::F32) Normalize<Source::kInput>(static_cast<const float*>(g), nullptr, 0.f, xs.as<bf16>(), n, "newtonSchulz5");
  else Normalize<Source::kInput>(static_cast<const bf16*>(g), nullptr, 0.f, xs.as<bf16>(), n, "newtonSchulz5");
  const bf16* x = Iterate(xs.as<bf16>(), ys.as<bf16>(), M, N, steps, reference);
  Cast(DType::BF16, x, outDt, out, n);
}

void MuonStep(float* p, const float* g, float* buf, void* copy, int64_t M, int64_t N, float mu, bool nesterov, float decay,
              float stepSize, int steps) {
  const int64_t n = M * N;
  if (n == 0) return;
  Scratch xs(n * sizeof(bf16)), ys(n * sizeof(bf16));
  if (nesterov) Normalize<Source::kNesterov>(g, buf, mu, xs.as<bf16>(), n, "muonStep");
  else Normalize<Source::kMomentum>(g, buf, mu, xs.as<bf16>(), n, "muonStep");
  const bf16* o = Iterate(xs.as<bf16>(), ys.as<bf16>(), M, N, steps, false);
  UpdateKernel<<<GridFor(n), kThreads, 0, ComputeStream()>>>(p, o, static_cast<bf16*>(copy), n, decay, stepSize);
  CheckLaunch("muonStep");
}

}  // namespace tessera::cuda
