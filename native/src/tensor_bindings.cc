// Creation, copies, views, casts and release of tensors.
#include <cmath>
#include <cstring>
#include <sstream>

#include "core/host_alloc.h"
#include "core/tensor.h"
#include "cpu/parallel.h"

namespace tessera {
namespace {

DType DTypeArg(const Napi::CallbackInfo& info, size_t i) {
  int code = static_cast<int>(NumberArg(info, i));
  if (code < 0 || code > 4) throw OpError("unknown dtype code " + std::to_string(code));
  return static_cast<DType>(code);
}

template <class A>
const void* TypedData(const Napi::Value& v, napi_typedarray_type want, const char* wantName, int64_t numel) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != want) {
    throw OpError(std::string("tensor: data must be a ") + wantName);
  }
  auto a = v.As<A>();
  if (static_cast<int64_t>(a.ElementLength()) != numel) {
    throw OpError("tensor: data has " + std::to_string(a.ElementLength()) + " elements but the shape holds " +
                  std::to_string(numel));
  }
  return a.Data();
}

Device DeviceArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsUndefined()) return Device::CPU;
  int code = static_cast<int>(NumberArg(info, i));
  if (code != 0 && code != 1) throw OpError("unknown device code " + std::to_string(code));
  return static_cast<Device>(code);
}

// Host memory a device copy passes through; from the block cache, but not a tensor's storage (not
// counted in LiveBytes nor reported to V8).
class Staging {
 public:
  explicit Staging(size_t bytes) : block_(HostAlloc(bytes)) {}
  ~Staging() { HostFree(block_); }
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;
  void* data() const { return block_.data; }

 private:
  HostBlock block_;
};

// Fills host memory dst (the tensor's bytes) from a JS typed array.
void FillFromTyped(const Napi::Value& v, DType dt, int64_t n, void* dst) {
  switch (dt) {
    case DType::F32:
      std::memcpy(dst, TypedData<Napi::Float32Array>(v, napi_float32_array, "Float32Array", n), n * 4);
      break;
    case DType::F64:
      std::memcpy(dst, TypedData<Napi::Float64Array>(v, napi_float64_array, "Float64Array", n), n * 8);
      break;
    case DType::I32:
      std::memcpy(dst, TypedData<Napi::Int32Array>(v, napi_int32_array, "Int32Array", n), n * 4);
      break;
    case DType::I64:
      std::memcpy(dst, TypedData<Napi::BigInt64Array>(v, napi_bigint64_array, "BigInt64Array", n), n * 8);
      break;
    case DType::BF16: {
      auto* src = static_cast<const float*>(TypedData<Napi::Float32Array>(v, napi_float32_array, "Float32Array", n));
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = FloatToBf16(src[i]);
      break;
    }
  }
}

// fromArray(dtype, shape, data, device?): a device tensor is staged through host memory (pinned
// for batch-sized data, so the host does not wait).
Napi::Value FromArray(const Napi::CallbackInfo& info) {
  DType dt = DTypeArg(info, 0);
  auto shape = ShapeArg(info, 1);
  Device dev = DeviceArg(info, 3);
  Out out = NewTensor(info.Env(), dt, shape, dev);
  int64_t n = out.t->numel;
  if (dev == Device::CPU) {
    FillFromTyped(info[2], dt, n, out.t->data<void>());
  } else if (out.t->bytes() <= kPinnedUploadBytes) {
    Napi::Value data = info[2];
    DeviceUpload("tensor", out.t->data<void>(), out.t->bytes(), [&](void* host) { FillFromTyped(data, dt, n, host); });
  } else {
    Staging staging(out.t->bytes());
    FillFromTyped(info[2], dt, n, staging.data());
    DeviceCopy("tensor", out.t->data<void>(), dev, staging.data(), Device::CPU, out.t->bytes());
  }
  return out.value;
}

// A JS typed array with a copy of host bytes src holding n elements of dt (bf16 widens to fp32).
Napi::Value TypedFromHost(Napi::Env env, DType dt, const void* src, size_t n) {
  switch (dt) {
    case DType::F32: {
      auto a = Napi::Float32Array::New(env, n);
      std::memcpy(a.Data(), src, n * 4);
      return a;
    }
    case DType::F64: {
      auto a = Napi::Float64Array::New(env, n);
      std::memcpy(a.Data(), src, n * 8);
      return a;
    }
    case DType::I32: {
      auto a = Napi::Int32Array::New(env, n);
      std::memcpy(a.Data(), src, n * 4);
      return a;
    }
    case DType::I64: {
      auto a = Napi::BigInt64Array::New(env, n);
      std::memcpy(a.Data(), src, n * 8);
      return a;
    }
    case DType::BF16: {
      auto a = Napi::Float32Array::New(env, n);
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) a[i] = Bf16ToFloat(s[i]);
      return a;
    }
  }
  return env.Undefined();
}

// toArray(t): a device tensor is copied to host first (this waits for the compute stream).
Napi::Value ToArray(const Napi::CallbackInfo& info) {
  TensorImpl& t = AnyTensorArg(info, 0);
  size_t n = static_cast<size_t>(t.numel);
  if (t.device() == Device::CPU) return TypedFromHost(info.Env(), t.dtype, t.data<void>(), n);
  Staging staging(t.bytes());
  DeviceCopy("toArray", staging.data(), Device::CPU, t.data<void>(), t.device(), t.bytes());
  return TypedFromHost(info.Env(), t.dtype, staging.data(), n);
}

// toDevice(t, device): a copy of t on device.
Napi::Value ToDevice(const Napi::CallbackInfo& info) {
  TensorImpl& t = AnyTensorArg(info, 0);
  Device dev = DeviceArg(info, 1);
  Out out = NewTensor(info.Env(), t.dtype, t.shape, dev);
  if (dev == Device::CPU && t.device() == Device::CPU) std::memcpy(out.t->data<void>(), t.data<void>(), t.bytes());
  else DeviceCopy("to", out.t->data<void>(), dev, t.data<void>(), t.device(), t.bytes());
  return out.value;
}

Napi::Value DeviceOf(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<int>(AnyTensorArg(info, 0).device()));
}

Napi::Value Zeros(const Napi::CallbackInfo& info) {
  Device dev = DeviceArg(info, 2);
  Out out = NewTensor(info.Env(), DTypeArg(info, 0), ShapeArg(info, 1), dev);
  if (dev == Device::CPU) std::memset(out.t->data<void>(), 0, out.t->storage->bytes);
  else DeviceZero("zeros", out.t->data<void>(), out.t->storage->bytes);
  return out.value;
}

// empty(dtype, shape, device): contents unset, for outputs a kernel overwrites whole (the
// device's debug fill, when on, shows what it leaves unwritten).
Napi::Value Empty(const Napi::CallbackInfo& info) {
  return NewTensor(info.Env(), DTypeArg(info, 0), ShapeArg(info, 1), DeviceArg(info, 2)).value;
}

uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Counter-based normal samples (Box-Muller on SplitMix64 streams): element i depends only on
// (seed, i), so the result is the same for any thread count.
Napi::Value Randn(const Napi::CallbackInfo& info) {
  DType dt = DTypeArg(info, 0);
  if (dt != DType::F32 && dt != DType::F64 && dt != DType::BF16) throw OpError("randn: dtype must be a float type");
  Out out = NewTensor(info.Env(), dt, ShapeArg(info, 1));
  uint64_t seed = static_cast<uint64_t>(NumberArg(info, 2));
  double stdev = NumberArg(info, 3);
  TensorImpl* t = out.t;
  int64_t pairs = (t->numel + 1) / 2;
  cpu::ParallelFor(pairs, 4096, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      uint64_t r = SplitMix(SplitMix(seed) ^ static_cast<uint64_t>(p));
      double u1 = ((r >> 11) + 1) * (1.0 / 9007199254740993.0);
      double u2 = (SplitMix(r) >> 11) * (1.0 / 9007199254740992.0);
      double rad = std::sqrt(-2.0 * std::log(u1)) * stdev;
      double z[2] = {rad * std::cos(2 * M_PI * u2), rad * std::sin(2 * M_PI * u2)};
      for (int k = 0; k < 2; ++k) {
        int64_t i = 2 * p + k;
        if (i >= t->numel) break;
        if (dt == DType::F32) t->data<float>()[i] = static_cast<float>(z[k]);
        else if (dt == DType::F64) t->data<double>()[i] = z[k];
        else t->data<uint16_t>()[i] = FloatToBf16(static_cast<float>(z[k]));
      }
    }
  });
  return out.value;
}

Napi::Value View(const Napi::CallbackInfo& info) {
  TensorImpl& t = AnyTensorArg(info, 0);
  auto shape = ShapeArg(info, 1);
  if (Numel(shape) != t.numel) throw OpError("reshape: element count changes");
  return NewView(info.Env(), t, shape);
}

// viewRows(t, start, count) -> rows [start, start + count) along dim 0, counted from t's first
// row: a view sharing t's storage. The range may run past t's own rows (a view of several
// adjacent views) but not past the storage, and not before t. A cuda view starts 16-byte
// aligned: the memory-bound kernels load 16-byte vectors from a tensor's start.
Napi::Value ViewRows(const Napi::CallbackInfo& info) {
  TensorImpl& t = AnyTensorArg(info, 0);
  const double start = NumberArg(info, 1), count = NumberArg(info, 2);
  if (t.ndim() < 1) throw OpError("rows: a tensor of at least one dimension");
  std::vector<int64_t> shape = t.shape;
  shape[0] = 1;
  const double rowBytes = static_cast<double>(Numel(shape)) * static_cast<double>(DTypeSize(t.dtype));
  // In doubles, which hold every byte count here exactly: no integer product can wrap.
  const double begin = static_cast<double>(t.offset) + start * rowBytes, last = begin + count * rowBytes;
  if (start != std::floor(start) || count != std::floor(count) || start < 0 || count < 0 || !(last <= static_cast<double>(t.storage->bytes))) {
    std::ostringstream range;
    range << "[" << start << ", " << start + count << ")";
    throw OpError("rows: " + range.str() + " is not a range of whole rows within the tensor's storage, from its first row");
  }
  if (t.device() == Device::CUDA && std::fmod(begin, 16.0) != 0) {
    throw OpError("rows: a cuda view must start 16-byte aligned (row " + std::to_string(static_cast<int64_t>(start)) + " starts at byte " +
                  std::to_string(static_cast<int64_t>(begin)) + ")");
  }
  shape[0] = static_cast<int64_t>(count);
  return NewViewAt(info.Env(), t, shape, static_cast<size_t>(begin));
}

Napi::Value Clone(const Napi::CallbackInfo& info) {
  TensorImpl& t = AnyTensorArg(info, 0);
  Out out = NewTensor(info.Env(), t.dtype, t.shape, t.device());
  if (t.device() == Device::CPU) std::memcpy(out.t->data<void>(), t.data<void>(), t.bytes());
  else DeviceCopy("clone", out.t->data<void>(), t.device(), t.data<void>(), t.device(), t.bytes());
  return out.value;
}

// copyInto(dst, src): any pair of devices (a host batch into a preallocated device buffer).
Napi::Value CopyInto(const Napi::CallbackInfo& info) {
  TensorImpl& dst = AnyTensorArg(info, 0);
  TensorImpl& src = AnyTensorArg(info, 1);
  if (dst.dtype != src.dtype || dst.numel != src.numel) throw OpError("copyInto: dtype or size differ");
  if (dst.device() == Device::CPU && src.device() == Device::CPU) std::memmove(dst.data<void>(), src.data<void>(), src.bytes());
  else DeviceCopy("copyInto", dst.data<void>(), dst.device(), src.data<void>(), src.device(), src.bytes());
  return info.Env().Undefined();
}

Napi::Value Release(const Napi::CallbackInfo& info) {
  Napi::Value v = info[0];
  if (TensorImpl* t = AsTensor(v)) t->storage.reset();
  return info.Env().Undefined();
}

template <class S, class D>
void ConvertGeneric(const TensorImpl& s, TensorImpl& d) {
  const S* sp = s.data<S>();
  D* dp = d.data<D>();
  cpu::ParallelFor(s.numel, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dp[i] = static_cast<D>(sp[i]);
  });
}

TESSERA_SIMD_CLONES void F32ToBf16(const float* s, uint16_t* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = FloatToBf16(s[i]);
}
TESSERA_SIMD_CLONES void Bf16ToF32(const uint16_t* s, float* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = Bf16ToFloat(s[i]);
}

template <class F>
void WithNumeric(DType d, F&& f) {
  switch (d) {
    case DType::F32: f(float{}); break;
    case DType::F64: f(double{}); break;
    case DType::I32: f(int32_t{}); break;
    case DType::I64: f(int64_t{}); break;
    case DType::BF16: break;
  }
}

Napi::Value Cast(const Napi::CallbackInfo& info) {
  TensorImpl& s = TensorArg(info, 0);
  DType to = DTypeArg(info, 1);
  Out out = NewTensor(info.Env(), to, s.shape);
  TensorImpl& d = *out.t;
  if (s.dtype == to) {
    std::memcpy(d.data<void>(), s.data<void>(), s.numel * DTypeSize(to));
  } else if (s.dtype == DType::F32 && to == DType::BF16) {
    cpu::ParallelFor(s.numel, 1 << 16, [&](int64_t b, int64_t e) { F32ToBf16(s.data<float>() + b, d.data<uint16_t>() + b, e - b); });
  } else if (s.dtype == DType::BF16 && to == DType::F32) {
    cpu::ParallelFor(s.numel, 1 << 16, [&](int64_t b, int64_t e) { Bf16ToF32(s.data<uint16_t>() + b, d.data<float>() + b, e - b); });
  } else if (s.dtype == DType::BF16 || to == DType::BF16) {
    // Through fp32, so that every path to bf16 rounds once, to nearest even.
    bool fromBf16 = s.dtype == DType::BF16;
    cpu::ParallelFor(s.numel, 1 << 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        if (fromBf16) {
          float f = Bf16ToFloat(s.data<uint16_t>()[i]);
          WithNumeric(to, [&](auto z) { d.data<decltype(z)>()[i] = static_cast<decltype(z)>(f); });
        } else {
          float f = 0;
          WithNumeric(s.dtype, [&](auto z) { f = static_cast<float>(s.data<decltype(z)>()[i]); });
          d.data<uint16_t>()[i] = FloatToBf16(f);
        }
      }
    });
  } else {
    WithNumeric(s.dtype, [&](auto a) {
      WithNumeric(to, [&](auto b) { ConvertGeneric<decltype(a), decltype(b)>(s, d); });
    });
  }
  return out.value;
}

// liveBytes(device?)
Napi::Value LiveBytesBinding(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(LiveBytes(DeviceArg(info, 0))));
}

Napi::Value EmptyCache(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(HostEmptyCache()));
}

Napi::Value CachedBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(HostCachedBytes()));
}

Napi::Value NumThreadsBinding(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cpu::NumThreads());
}

}  // namespace

void RegisterTensorBindings(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "fromArray", FromArray);
  Export(env, exports, "toArray", ToArray);
  Export(env, exports, "toDevice", ToDevice);
  Export(env, exports, "deviceOf", DeviceOf);
  Export(env, exports, "zeros", Zeros);
  Export(env, exports, "empty", Empty);
  Export(env, exports, "randn", Randn);
  Export(env, exports, "view", View);
  Export(env, exports, "viewRows", ViewRows);
  Export(env, exports, "clone", Clone);
  Export(env, exports, "copyInto", CopyInto);
  Export(env, exports, "release", Release);
  Export(env, exports, "cast", Cast);
  Export(env, exports, "liveBytes", LiveBytesBinding);
  Export(env, exports, "numThreads", NumThreadsBinding);
  Export(env, exports, "emptyCache", EmptyCache);
  Export(env, exports, "cachedBytes", CachedBytes);
}

}  // namespace tessera
