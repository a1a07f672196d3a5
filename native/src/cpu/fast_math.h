// exp for float that GCC can vectorise (libm's expf is a call per element): Cody-Waite range
// reduction to 2^n * e^r, |r| <= ln2/2, and a degree-6 Taylor polynomial for e^r (relative
// error below 2e-7, on par with float rounding). Inputs below -87 give exactly 0, so masked
// (-inf) scores vanish. Double keeps libm: it is the gradient-check precision.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace tessera::cpu {

inline float FastExp(float x) {
  // Branch-free (selects, no early returns) so that loops calling it vectorise.
  const float lo = -87.0f;
  float xc = x < lo ? lo : x;
  xc = xc > 88.0f ? 88.0f : xc;
  // Adding 1.5*2^23 rounds to an integer in the float unit itself (no libm call to vectorise).
  const float magic = 12582912.0f;
  float n = (xc * 1.44269504088896341f + magic) - magic;
  float r = xc - n * 0.693145751953125f;
  r = r - n * 1.428606765330187e-06f;
  float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
  int32_t e = (static_cast<int32_t>(n) + 127) << 23;
  float scale = __builtin_bit_cast(float, e);
  return x < lo ? 0.0f : p * scale;
}

inline double FastExp(double x) { return std::exp(x); }

template <class T>
inline T FastSigmoid(T x) { return T(1) / (T(1) + FastExp(-x)); }

/** tanh(u) = 1 - 2 / (e^{2u} + 1), through FastExp (exact limits: 1 for large u, -1 for very negative). */
inline float FastTanh(float u) { return 1.0f - 2.0f / (FastExp(2.0f * u) + 1.0f); }
inline double FastTanh(double u) { return std::tanh(u); }

/** sum a[i]*b[i] with 16 independent partial sums (vectorisable), finished in double. */
template <class T>
inline double Dot(const T* a, const T* b, int64_t n) {
  T acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int k = 0; k < 16; ++k) acc[k] += a[i + k] * b[i + k];
  double s = 0;
  for (; i < n; ++i) s += double(a[i]) * b[i];
  for (int k = 0; k < 16; ++k) s += acc[k];
  return s;
}

/** max of a[0..n), n >= 1, with 16 partial maxima (vectorisable; std::max chains are not). */
template <class T>
inline T Max(const T* a, int64_t n) {
  T acc[16];
  for (int k = 0; k < 16; ++k) acc[k] = a[0];
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int k = 0; k < 16; ++k) acc[k] = a[i + k] > acc[k] ? a[i + k] : acc[k];
  T m = a[0];
  for (; i < n; ++i) m = a[i] > m ? a[i] : m;
  for (int k = 0; k < 16; ++k) m = acc[k] > m ? acc[k] : m;
  return m;
}

template <class T>
inline double Sum(const T* a, int64_t n) {
  T acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int k = 0; k < 16; ++k) acc[k] += a[i + k];
  double s = 0;
  for (; i < n; ++i) s += a[i];
  for (int k = 0; k < 16; ++k) s += acc[k];
  return s;
}

}  // namespace tessera::cpu
