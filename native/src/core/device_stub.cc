// Device services of a build without CUDA: asking for them is an error that says so.
#ifndef TESSERA_CUDA
#include "core/device.h"
#include "core/error.h"

namespace tessera {

namespace {
[[noreturn]] void NoCuda() {
  throw OpError("cuda: this addon was built without CUDA (CMake found no CUDA toolkit); rebuild on a machine with one");
}
}  // namespace

DeviceBlock DeviceAlloc(size_t) { NoCuda(); }
void DeviceFree(DeviceBlock) noexcept {}
void DeviceCopy(const char*, void*, Device, const void*, Device, size_t) { NoCuda(); }
void DeviceZero(const char*, void*, size_t) { NoCuda(); }
void DeviceUpload(const char*, void*, size_t, const std::function<void(void*)>&) { NoCuda(); }

}  // namespace tessera
#endif
