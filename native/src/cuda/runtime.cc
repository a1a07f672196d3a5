// Device selection, streams, error checks and host/device copies.
#include "cuda/runtime.h"

#include <atomic>
#include <cstdlib>
#include <mutex>

namespace tessera::cuda {
namespace {

struct Runtime {
  std::atomic<bool> ready{false};
  int device = 0;
  int sms = 0;
  cudaStream_t compute = nullptr;
  cudaStream_t comm = nullptr;
  bool syncAfterLaunch = false;
};

Runtime& Rt() {
  static Runtime* rt = new Runtime();  // never destroyed: tensors may be finalised at exit
  return *rt;
}

std::mutex gInitMu;

}  // namespace

void Check(const char* op, const char* what, cudaError_t err) {
  if (err == cudaSuccess) return;
  throw OpError(std::string(op) + ": " + what + " failed: " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

void EnsureInit(const char* op) {
  Runtime& rt = Rt();
  if (rt.ready) return;
  std::lock_guard<std::mutex> lk(gInitMu);
  if (rt.ready) return;
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess || n == 0) {
    (void)cudaGetLastError();
    throw OpError(std::string(op) + ": no CUDA device is visible" +
                  (err != cudaSuccess ? std::string(" (cudaGetDeviceCount: ") + cudaGetErrorString(err) + ")" : ""));
  }
  const char* env = std::getenv("TESSERA_CUDA_DEVICE");
  int dev = env ? std::atoi(env) : 0;
  if (dev < 0 || dev >= n) {
    throw OpError(std::string(op) + ": TESSERA_CUDA_DEVICE=" + env + " but " + std::to_string(n) + " device(s) are visible");
  }
  TESSERA_CUDA_CHECK(op, cudaSetDevice(dev));
  // Non-blocking: no implicit ordering with the legacy default stream, which nothing here uses.
  TESSERA_CUDA_CHECK(op, cudaStreamCreateWithFlags(&rt.compute, cudaStreamNonBlocking));
  TESSERA_CUDA_CHECK(op, cudaStreamCreateWithFlags(&rt.comm, cudaStreamNonBlocking));
  const char* sync = std::getenv("TESSERA_CUDA_SYNC");
  rt.syncAfterLaunch = sync && sync[0] == '1';
  TESSERA_CUDA_CHECK(op, cudaDeviceGetAttribute(&rt.sms, cudaDevAttrMultiProcessorCount, dev));
  rt.device = dev;
  rt.ready = true;
}

int SmCount() {
  EnsureInit("cuda");
  return Rt().sms;
}

cudaStream_t ComputeStream() {
  EnsureInit("cuda");
  return Rt().compute;
}

cudaStream_t CommStream() {
  EnsureInit("cuda");
  return Rt().comm;
}

void CheckLaunch(const char* op) {
  Check(op, "kernel launch", cudaGetLastError());
  if (Rt().syncAfterLaunch) Check(op, "kernel (TESSERA_CUDA_SYNC)", cudaStreamSynchronize(Rt().compute));
}

}  // namespace tessera::cuda

namespace tessera {

void DeviceCopy(const char* op, void* dst, Device dstDev, const void* src, Device srcDev, size_t bytes) {
  cudaStream_t s = cuda::ComputeStream();
  if (bytes == 0) return;
  // cudaMemcpyDefault infers the direction (unified addressing). From pageable host memory the
  // call returns once the source is staged, so the caller may free it at once.
  TESSERA_CUDA_CHECK(op, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s));
  if (dstDev == Device::CPU) TESSERA_CUDA_CHECK(op, cudaStreamSynchronize(s));
}

namespace {

// Pinned staging slots for small uploads: a copy from pinned memory is a true asynchronous DMA,
// where one from pageable memory makes the driver stage it first.
struct PinnedSlots {
  static constexpr int kSlots = 8;
  std::mutex mu;
  void* mem[kSlots] = {};
  cudaEvent_t done[kSlots] = {};
  int next = 0;
};

PinnedSlots& Slots() {
  static PinnedSlots* slots = new PinnedSlots();  // never destroyed: uploads may run until exit
  return *slots;
}

}  // namespace

void DeviceUpload(const char* op, void* dst, size_t bytes, const std::function<void(void*)>& fill) {
  if (bytes == 0) return;
  if (bytes > kPinnedUploadBytes) throw OpError(std::string(op) + ": " + std::to_string(bytes) + " bytes exceed a pinned upload slot");
  cuda::EnsureInit(op);
  PinnedSlots& p = Slots();
  std::lock_guard<std::mutex> lk(p.mu);
  int k = p.next;
  p.next = (k + 1) % PinnedSlots::kSlots;
  if (!p.mem[k]) {
    TESSERA_CUDA_CHECK(op, cudaHostAlloc(&p.mem[k], kPinnedUploadBytes, cudaHostAllocDefault));
    TESSERA_CUDA_CHECK(op, cudaEventCreateWithFlags(&p.done[k], cudaEventDisableTiming));
  } else {
    // Recorded kSlots uploads ago: as a rule long done.
    TESSERA_CUDA_CHECK(op, cudaEventSynchronize(p.done[k]));
  }
  fill(p.mem[k]);
  cudaStream_t s = cuda::ComputeStream();
  TESSERA_CUDA_CHECK(op, cudaMemcpyAsync(dst, p.mem[k], bytes, cudaMemcpyHostToDevice, s));
  TESSERA_CUDA_CHECK(op, cudaEventRecord(p.done[k], s));
}

void DeviceZero(const char* op, void* dst, size_t bytes) {
  TESSERA_CUDA_CHECK(op, cudaMemsetAsync(dst, 0, bytes, cuda::ComputeStream()));
}

}  // namespace tessera
