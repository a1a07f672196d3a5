// Elementwise ops and casts: grid-stride loops, fp32 arithmetic on fp32 or bf16 storage.
// Floor: the bytes read and written at copy bandwidth (see native/NOTES.md).
#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace tessera::cuda {
namespace {

template <class T, class F>
__global__ void BinaryKernel(const T* a, const T* b, T* out, int64_t n, F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    Store(out, i, f(Load(a, i), Load(b, i)));
  }
}

template <class T>
__global__ void ScaleKernel(const T* a, float s, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    Store(out, i, Load(a, i) * s);
  }
}

template <class D, class S>
__global__ void AddIntoKernel(D* dst, const S* src, float alpha, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    Store(dst, i, Load(dst, i) + alpha * Load(src, i));
  }
}

template <class S, class D>
__global__ void CastKernel(const S* src, D* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    Store(dst, i, Load(src, i));
  }
}

struct AddOp {
  __device__ float operator()(float x, float y) const { return x + y; }
};
struct MulOp {
  __device__ float operator()(float x, float y) const { return x * y; }
};

template <class F>
void Binary(const char* op, DType dt, const void* a, const void* b, void* out, int64_t n, F f) {
  if (n == 0) return;
  cudaStream_t s = ComputeStream();
  if (dt == DType::F32) {
    BinaryKernel<<<GridFor(n), kThreads, 0, s>>>(static_cast<const float*>(a), static_cast<const float*>(b), static_cast<float*>(out), n, f);
  } else {
    BinaryKernel<<<GridFor(n), kThreads, 0, s>>>(static_cast<const bf16*>(a), static_cast<const bf16*>(b), static_cast<bf16*>(out), n, f);
  }
  CheckLaunch(op);
}

__global__ void BadLaunchKernel() {}

}  // namespace

void Add(DType dt, const void* a, const void* b, void* out, int64_t n) { Binary("add", dt, a, b, out, n, AddOp{}); }
void Mul(DType dt, const void* a, const void* b, void* out, int64_t n) { Binary("mul", dt, a, b, out, n, MulOp{}); }

void Scale(DType dt, const void* a, float sc, void* out, int64_t n) {
  if (n == 0) return;
  cudaStream_t s = ComputeStream();
  if (dt == DType::F32) ScaleKernel<<<GridFor(n), kThreads, 0, s>>>(static_cast<const float*>(a), sc, static_cast<float*>(out), n);
  else ScaleKernel<<<GridFor(n), kThreads, 0, s>>>(static_cast<const bf16*>(a), sc, static_cast<bf16*>(out), n);
  CheckLaunch("scale");
}

void AddInto(DType dstDt, void* dst, DType srcDt, const void* src, float alpha, int64_t n) {
  if (n == 0) return;
  cudaStream_t s = ComputeStream();
  unsigned g = GridFor(n);
  bool df = dstDt == DType::F32, sf = srcDt == DType::F32;
  if (df && sf) AddIntoKernel<<<g, kThreads, 0, s>>>(static_cast<float*>(dst), static_cast<const float*>(src), alpha, n);
  else if (df) AddIntoKernel<<<g, kThreads, 0, s>>>(static_cast<float*>(dst), static_cast<const bf16*>(src), alpha, n);
  else if (sf) AddIntoKernel<<<g, kThreads, 0, s>>>(static_cast<bf16*>(dst), static_cast<const float*>(src), alpha, n);
  else AddIntoKernel<<<g, kThreads, 0, s>>>(static_cast<bf16*>(dst), static_cast<const bf16*>(src), alpha, n);
  CheckLaunch("addInto");
}

void Cast(DType from, const void* src, DType to, void* dst, int64_t n) {
  if (n == 0) return;
  cudaStream_t s = ComputeStream();
  if (from == to) {
    Check("cast", "cudaMemcpyAsync", cudaMemcpyAsync(dst, src, n * DTypeSize(to), cudaMemcpyDeviceToDevice, s));
    return;
  }
  if (from == DType::F32 && to == DType::BF16) {
    CastKernel<<<GridFor(n), kThreads, 0, s>>>(static_cast<const float*>(src), static_cast<bf16*>(dst), n);
  } else if (from == DType::BF16 && to == DType::F32) {
    CastKernel<<<GridFor(n), kThreads, 0, s>>>(static_cast<const bf16*>(src), static_cast<float*>(dst), n);
  } else {
    throw OpError(std::string("cast: ") + DTypeName(from) + " to " + DTypeName(to) + " is not supported on cuda (float32 <-> bfloat16)");
  }
  CheckLaunch("cast");
}

void BadLaunch() {
  BadLaunchKernel<<<1, 4096, 0, ComputeStream()>>>();  // 4096 > 1024 threads per block: invalid configuration
  CheckLaunch("debugBadLaunch");
}

}  // namespace tessera::cuda
