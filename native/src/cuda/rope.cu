// Rotary embeddings (HF rotate_half: pairs (i, i + Dh/2)), forward and its transpose. The
// frequency table comes from the host (ropeFrequencies in native/rope.ts, the CPU's schedule)
// as a kernel argument; angles are fp32 pos * inv_freq and cos/sin are scaled by the
// attention factor, as the CPU kernel computes them.
// Floor: reads and writes T*H*Dh elements.
#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace tessera::cuda {
namespace {

struct Freqs {
  float f[kMaxRopeHalf];
};

template <class T>
__global__ void RopeKernel(const T* x, const int32_t* pos, Freqs freqs, float attnScale, float sign, T* y, int64_t T_, int64_t H,
                           int64_t half) {
  int64_t n = T_ * H * half;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    int64_t i = k % half;
    int64_t th = k / half;  // t * H + h
    int64_t t = th / H;
    float ang = static_cast<float>(pos[t]) * freqs.f[i];
    float c = static_cast<float>(static_cast<double>(cosf(ang)) * attnScale);
    float s = static_cast<float>(static_cast<double>(sinf(ang)) * attnScale) * sign;
    int64_t base = th * 2 * half;
    float a = Load(x, base + i), b = Load(x, base + i + half);
    Store(y, base + i, a * c - b * s);
    Store(y, base + i + half, b * c + a * s);
  }
}

}  // namespace

void Rope(DType dt, const void* x, const int32_t* positions, const float* invFreq, float attnScale, bool inverse, void* y,
          int64_t T, int64_t H, int64_t Dh) {
  const char* op = inverse ? "ropeBackward" : "rope";
  int64_t half = Dh / 2;
  if (half > kMaxRopeHalf) throw OpError(std::string(op) + ": head dim " + std::to_string(Dh) + " exceeds " + std::to_string(2 * kMaxRopeHalf) + " on cuda");
  int64_t n = T * H * half;
  if (n == 0) return;
  Freqs f{};
  for (int64_t i = 0; i < half; ++i) f.f[i] = invFreq[i];
  cudaStream_t s = ComputeStream();
  float sign = inverse ? -1.f : 1.f;
  if (dt == DType::F32) RopeKernel<<<GridFor(n), kThreads, 0, s>>>(static_cast<const float*>(x), positions, f, attnScale, sign, static_cast<float*>(y), T, H, half);
  else RopeKernel<<<GridFor(n), kThreads, 0, s>>>(static_cast<const bf16*>(x), positions, f, attnScale, sign, static_cast<bf16*>(y), T, H, half);
  CheckLaunch(op);
}

}  // namespace tessera::cuda
