// Copies between one [R, W] tensor and up to kMaxColumnParts tensors [R, w_i] that lie side by
// side in it (sum of w_i = W): a fused projection's output split into q, k and v, and their
// gradients put back together. Pure data movement, any dtype: the kernel moves 16-byte units
// where every part's row is a multiple of 16 bytes, else single elements. Floor: R W bytes read
// and written once.
#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace tessera::cuda {
namespace {

struct Parts {
  char* ptr[kMaxColumnParts];
  int64_t start[kMaxColumnParts + 1];  // prefix sums of the widths, in units
  int n;
};

template <class U>
__global__ void ColumnsKernel(char* one, Parts parts, int64_t rows, bool split) {
  const int64_t W = parts.start[parts.n];
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * W; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = i / W, c = i - r * W;
    int p = 0;
    while (c >= parts.start[p + 1]) ++p;
    int64_t w = parts.start[p + 1] - parts.start[p];
    U* whole = reinterpret_cast<U*>(one) + i;
    U* part = reinterpret_cast<U*>(parts.ptr[p]) + r * w + (c - parts.start[p]);
    if (split) *part = *whole;
    else *whole = *part;
  }
}

template <class U>
void Launch(void* one, const std::vector<void*>& ptrs, const std::vector<int64_t>& widthBytes, int64_t rows, bool split) {
  Parts parts{};
  parts.n = static_cast<int>(ptrs.size());
  for (int p = 0; p < parts.n; ++p) {
    parts.ptr[p] = static_cast<char*>(ptrs[p]);
    parts.start[p + 1] = parts.start[p] + widthBytes[p] / static_cast<int64_t>(sizeof(U));
  }
  int64_t n = rows * parts.start[parts.n];
  if (n == 0) return;
  ColumnsKernel<U><<<GridFor(n), kThreads, 0, ComputeStream()>>>(static_cast<char*>(one), parts, rows, split);
}

}  // namespace

void CopyColumns(void* one, const std::vector<void*>& parts, const std::vector<int64_t>& widthBytes, int64_t elemBytes, int64_t rows, bool split,
                 const char* op) {
  // 16-byte moves where every row of every buffer starts on 16 bytes (cuda tensors and their row
  // views do; a caller's raw pointer is checked rather than trusted).
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  bool wide = aligned(one);
  for (int64_t w : widthBytes) wide = wide && w % 16 == 0;
  for (void* p : parts) wide = wide && aligned(p);
  if (wide) Launch<uint4>(one, parts, widthBytes, rows, split);
  else if (elemBytes == 8) Launch<uint64_t>(one, parts, widthBytes, rows, split);
  else if (elemBytes == 4) Launch<uint32_t>(one, parts, widthBytes, rows, split);
  else if (elemBytes == 2) Launch<uint16_t>(one, parts, widthBytes, rows, split);
  else Launch<uint8_t>(one, parts, widthBytes, rows, split);
  CheckLaunch(op);
}

}  // namespace tessera::cuda
