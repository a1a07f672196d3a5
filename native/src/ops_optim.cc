// Optimizer kernels, in place on fp32 (or fp64) parameters and state:
// AdamW as torch.optim.AdamW (decoupled weight decay, bias correction), and Muon as in
// Moonlight (Nesterov momentum, Newton-Schulz orthogonalisation, update scaled by
// 0.2*sqrt(max(M,N)) so its RMS matches AdamW's).
#include <cmath>

#include "core/tensor.h"
#include "cpu/gemm.h"
#include "cpu/parallel.h"

namespace tessera {
namespace {

void SameShape(const char* op, const TensorImpl& a, const TensorImpl& b, const char* name) {
  if (a.numel != b.numel || a.dtype != b.dtype) {
    throw OpError(std::string(op) + ": " + name + " must match the parameter's size and dtype");
  }
}

template <class T>
TESSERA_INLINE void AdamwImpl(T* p, const T* g, T* m, T* v, int64_t n, T lr, T b1, T b2, T eps, T decay, T stepSize,
                              T invSqrtBc2) {
  for (int64_t i = 0; i < n; ++i) {
    T gi = g[i];
    T mi = b1 * m[i] + (T(1) - b1) * gi;
    T vi = b2 * v[i] + (T(1) - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    T pi = p[i] * decay;
    p[i] = pi - stepSize * mi / (std::sqrt(vi) * invSqrtBc2 + eps);
  }
}
TESSERA_SIMD_CLONES void AdamwRange(float* p, const float* g, float* m, float* v, int64_t n, float lr, float b1,
                                    float b2, float eps, float decay, float stepSize, float invSqrtBc2) {
  AdamwImpl<float>(p, g, m, v, n, lr, b1, b2, eps, decay, stepSize, invSqrtBc2);
}
TESSERA_SIMD_CLONES void AdamwRange(double* p, const double* g, double* m, double* v, int64_t n, double lr, double b1,
                                    double b2, double eps, double decay, double stepSize, double invSqrtBc2) {
  AdamwImpl<double>(p, g, m, v, n, lr, b1, b2, eps, decay, stepSize, invSqrtBc2);
}

// adamwStep(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step)
Napi::Value AdamwStep(const Napi::CallbackInfo& info) {
  TensorImpl& p = TensorArg(info, 0);
  TensorImpl& g = TensorArg(info, 1);
  TensorImpl& m = TensorArg(info, 2);
  TensorImpl& v = TensorArg(info, 3);
  SameShape("adamwStep", p, g, "grad");
  SameShape("adamwStep", p, m, "m");
  SameShape("adamwStep", p, v, "v");
  double lr = NumberArg(info, 4), b1 = NumberArg(info, 5), b2 = NumberArg(info, 6), eps = NumberArg(info, 7);
  double wd = NumberArg(info, 8), step = NumberArg(info, 9);
  if (step < 1) throw OpError("adamwStep: step counts from 1");
  double bc1 = 1 - std::pow(b1, step), bc2 = 1 - std::pow(b2, step);
  DispatchFloat("adamwStep", p.dtype, [&](auto z) {
    using T = decltype(z);
    cpu::ParallelFor(p.numel, 1 << 14, [&](int64_t b, int64_t e) {
      AdamwRange(p.data<T>() + b, g.data<T>() + b, m.data<T>() + b, v.data<T>() + b, e - b, T(lr), T(b1), T(b2),
                 T(eps), T(1 - lr * wd), T(lr / bc1), T(1 / std::sqrt(bc2)));
    });
  });
  return info.Env().Undefined();
}

// Keller Jordan's quintic Newton-Schulz iteration, in the working precision (the reference
// uses bf16 on GPU): X = G / (|G|_F + 1e-7), transposed so rows <= cols; then `steps` times
// A = X X^T, B = b A + c A A, X = a X + B X.
template <class T>
void NewtonSchulz(const T* G, int64_t M, int64_t N, int steps, T* out) {
  const T a = T(3.4445), b = T(-4.7750), c = T(2.0315);
  bool tr = M > N;
  int64_t m = tr ? N : M, n = tr ? M : N;
  std::vector<T> X(m * n), Y(m * n), A(m * m), B(m * m);
  double ss = 0;
  for (int64_t i = 0; i < M * N; ++i) ss += double(G[i]) * G[i];
  T inv = static_cast<T>(1.0 / (std::sqrt(ss) + 1e-7));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      T val = G[i * N + j] * inv;
      if (tr) X[j * n + i] = val;
      else X[i * n + j] = val;
    }
  for (int s = 0; s < steps; ++s) {
    cpu::Gemm<T>(false, true, m, m, n, T(1), X.data(), n, X.data(), n, T(0), A.data(), m);
    for (int64_t i = 0; i < m * m; ++i) B[i] = b * A[i];
    cpu::Gemm<T>(false, false, m, m, m, c, A.data(), m, A.data(), m, T(1), B.data(), m);
    Y = X;
    cpu::Gemm<T>(false, false, m, n, m, T(1), B.data(), m, X.data(), n, a, Y.data(), n);
    std::swap(X, Y);
  }
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) out[i * N + j] = tr ? X[j * n + i] : X[i * n + j];
}

Napi::Value NewtonSchulz5(const Napi::CallbackInfo& info) {
  TensorImpl& g = TensorArg(info, 0);
  int steps = static_cast<int>(NumberArg(info, 1));
  if (g.ndim() != 2) throw OpError("newtonSchulz5: g must be 2-D");
  Out out = NewTensor(info.Env(), g.dtype, g.shape);
  DispatchFloat("newtonSchulz5", g.dtype, [&](auto z) {
    using T = decltype(z);
    NewtonSchulz<T>(g.data<T>(), g.dim(0), g.dim(1), steps, out.t->data<T>());
  });
  return out.value;
}

// muonStep(param, grad, momentumBuf, lr, momentum, nesterov, weightDecay, nsSteps), Moonlight's form:
// buf = mu*buf + g; u = NS(nesterov ? g + mu*buf : buf); p = p*(1 - lr*wd) - lr*0.2*sqrt(max(M,N))*u.
Napi::Value MuonStep(const Napi::CallbackInfo& info) {
  TensorImpl& p = TensorArg(info, 0);
  TensorImpl& g = TensorArg(info, 1);
  TensorImpl& buf = TensorArg(info, 2);
  double lr = NumberArg(info, 3), mu = NumberArg(info, 4);
  bool nesterov = BoolArg(info, 5);
  double wd = NumberArg(info, 6);
  int steps = static_cast<int>(NumberArg(info, 7));
  if (p.ndim() != 2) throw OpError("muonStep: the parameter must be a 2-D matrix");
  SameShape("muonStep", p, g, "grad");
  SameShape("muonStep", p, buf, "momentum");
  int64_t M = p.dim(0), N = p.dim(1);
  DispatchFloat("muonStep", p.dtype, [&](auto z) {
    using T = decltype(z);
    T *pp = p.data<T>(), *bp = buf.data<T>();
    const T* gp = g.data<T>();
    std::vector<T> u(M * N), o(M * N);
    for (int64_t i = 0; i < M * N; ++i) {
      bp[i] = T(mu) * bp[i] + gp[i];
      u[i] = nesterov ? gp[i] + T(mu) * bp[i] : bp[i];
    }
    NewtonSchulz<T>(u.data(), M, N, steps, o.data());
    T decay = T(1 - lr * wd), step = T(lr * 0.2 * std::sqrt(double(std::max(M, N))));
    for (int64_t i = 0; i < M * N; ++i) pp[i] = pp[i] * decay - step * o[i];
  });
  return info.Env().Undefined();
}

}  // namespace

void RegisterOptimBindings(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "adamwStep", AdamwStep);
  Export(env, exports, "newtonSchulz5", NewtonSchulz5);
  Export(env, exports, "muonStep", MuonStep);
}

}  // namespace tessera
