// Blocked GEMM in the GotoBLAS layout: for each KC-deep slice, op(A) and op(B) are packed
// into MR-row and NR-column panels (transposes are absorbed by the packing), then a
// register-blocked MR x NR micro-kernel runs over a grid of (MC rows x NCB columns) tiles,
// one tile per parallel task. The micro-kernel is plain C++ that GCC vectorises; it is
// compiled for AVX2+FMA and for the baseline (TESSERA_SIMD_CLONES).
#include "cpu/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cpu/parallel.h"

namespace tessera::cpu {
namespace {

// Register blocks (MR rows x NR columns of C held in registers): 6 x 16 floats (6 x 8
// doubles) fill the 16 AVX2 registers; with AVX-512, 8 x 32 floats (8 x 16 doubles) use 16 of
// its 32 registers and enough independent FMAs to cover their latency.
template <class T, int MR_, int NR_>
struct Blocking {
  static constexpr int MR = MR_, NR = NR_;
};
template <class T>
using Narrow = Blocking<T, 6, 64 / sizeof(T)>;
template <class T>
using Wide = Blocking<T, 8, 128 / sizeof(T)>;
constexpr int64_t KC = 256;
constexpr int64_t MC_PANELS = 16;   // MC = 16 * MR rows per tile
constexpr int64_t NCB_PANELS = 16;  // 16 * NR columns per tile

template <class T, class B>
TESSERA_INLINE void MicroKernel(int64_t kc, const T* __restrict Ap, const T* __restrict Bp, T* C, int64_t ldc,
                                int mr, int nr) {
  constexpr int MR = B::MR, NR = B::NR;
  T acc[MR][NR] = {};
  for (int64_t p = 0; p < kc; ++p) {
    const T* a = Ap + p * MR;
    const T* b = Bp + p * NR;
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      T ai = a[i];
#pragma GCC unroll 16
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * b[j];
    }
  }
  if (mr == MR && nr == NR) {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) C[i * ldc + j] += acc[i][j];
  } else {
    for (int i = 0; i < mr; ++i)
      for (int j = 0; j < nr; ++j) C[i * ldc + j] += acc[i][j];
  }
}

template <class T, class B>
TESSERA_INLINE void TileImpl(int64_t kc, const T* Ap, const T* Bp, T* C, int64_t ldc, int64_t mRows, int64_t nCols) {
  constexpr int MR = B::MR, NR = B::NR;
  for (int64_t jr = 0; jr < nCols; jr += NR) {
    int nr = static_cast<int>(std::min<int64_t>(NR, nCols - jr));
    for (int64_t ir = 0; ir < mRows; ir += MR) {
      int mr = static_cast<int>(std::min<int64_t>(MR, mRows - ir));
      MicroKernel<T, B>(kc, Ap + ir * kc, Bp + jr * kc, C + ir * ldc + jr, ldc, mr, nr);
    }
  }
}

TESSERA_SIMD_CLONES void TileNarrow(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, int64_t m,
                                    int64_t n) {
  TileImpl<float, Narrow<float>>(kc, Ap, Bp, C, ldc, m, n);
}
TESSERA_SIMD_CLONES void TileNarrow(int64_t kc, const double* Ap, const double* Bp, double* C, int64_t ldc, int64_t m,
                                    int64_t n) {
  TileImpl<double, Narrow<double>>(kc, Ap, Bp, C, ldc, m, n);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TESSERA_HAVE_WIDE 1
__attribute__((target("arch=x86-64-v4,prefer-vector-width=512"))) void TileWide(int64_t kc, const float* Ap,
                                                                                 const float* Bp, float* C,
                                                                                 int64_t ldc, int64_t m, int64_t n) {
  TileImpl<float, Wide<float>>(kc, Ap, Bp, C, ldc, m, n);
}
__attribute__((target("arch=x86-64-v4,prefer-vector-width=512"))) void TileWide(int64_t kc, const double* Ap,
                                                                                 const double* Bp, double* C,
                                                                                 int64_t ldc, int64_t m, int64_t n) {
  TileImpl<double, Wide<double>>(kc, Ap, Bp, C, ldc, m, n);
}

// TESSERA_CPU_NO_AVX512=1 forces the AVX2 blocking (to test it on AVX-512 machines).
bool HasAvx512() {
  static const bool yes = !std::getenv("TESSERA_CPU_NO_AVX512") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                          __builtin_cpu_supports("avx512cd");
  return yes;
}
#endif

// Packs rows [0,M) x depth [pc,pc+kc) of op(A), times alpha, into MR-row panels: panel r holds
// Ap[r*MR*kc + p*MR + i] = alpha * op(A)[r*MR + i, pc + p], zero-padded past M.
template <class T, int MR>
void PackA(bool transA, const T* A, int64_t lda, int64_t M, int64_t pc, int64_t kc, T alpha, T* Ap) {
  int64_t panels = (M + MR - 1) / MR;
  ParallelFor(panels, 8, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      T* dst = Ap + r * MR * kc;
      for (int i = 0; i < MR; ++i) {
        int64_t row = r * MR + i;
        if (row >= M) {
          for (int64_t p = 0; p < kc; ++p) dst[p * MR + i] = 0;
        } else if (!transA) {
          const T* src = A + row * lda + pc;
          for (int64_t p = 0; p < kc; ++p) dst[p * MR + i] = alpha * src[p];
        } else {
          const T* src = A + pc * lda + row;
          for (int64_t p = 0; p < kc; ++p) dst[p * MR + i] = alpha * src[p * lda];
        }
      }
    }
  });
}

// Packs depth [pc,pc+kc) x columns [jc,jc+nc) of op(B) into NR-column panels.
template <class T, int NR>
void PackB(bool transB, const T* B, int64_t ldb, int64_t pc, int64_t kc, int64_t jc, int64_t nc, T* Bp) {
  int64_t panels = (nc + NR - 1) / NR;
  ParallelFor(panels, 8, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      T* dst = Bp + r * NR * kc;
      int64_t c0 = jc + r * NR;
      int nr = static_cast<int>(std::min<int64_t>(NR, jc + nc - c0));
      for (int64_t p = 0; p < kc; ++p) {
        T* d = dst + p * NR;
        if (!transB) {
          const T* src = B + (pc + p) * ldb + c0;
          for (int j = 0; j < nr; ++j) d[j] = src[j];
        } else {
          const T* src = B + c0 * ldb + pc + p;
          for (int j = 0; j < nr; ++j) d[j] = src[j * ldb];
        }
        for (int j = nr; j < NR; ++j) d[j] = 0;
      }
    }
  });
}

template <class T, class Blk, class TileFn>
void GemmBlocked(bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                 const T* B, int64_t ldb, T* C, int64_t ldc, TileFn tile) {
  constexpr int MR = Blk::MR, NR = Blk::NR;
  int64_t mPanels = (M + MR - 1) / MR;
  int64_t nPanels = (N + NR - 1) / NR;
  // Smaller tiles when the default grid would leave threads idle (small or skinny products).
  int64_t mcPanels = MC_PANELS, ncbPanels = NCB_PANELS;
  auto tasks = [&] { return ((mPanels + mcPanels - 1) / mcPanels) * ((nPanels + ncbPanels - 1) / ncbPanels); };
  while (tasks() < 2 * NumThreads() && (mcPanels > 2 || ncbPanels > 2)) {
    if (ncbPanels >= mcPanels && ncbPanels > 2) ncbPanels /= 2;
    else mcPanels /= 2;
  }
  const int64_t MC = mcPanels * MR, NCB = ncbPanels * NR;
  std::vector<T> Ap(static_cast<size_t>(mPanels * MR * std::min(K, KC)));
  std::vector<T> Bp(static_cast<size_t>(nPanels * NR * std::min(K, KC)));
  int64_t mTiles = (M + MC - 1) / MC, nTiles = (N + NCB - 1) / NCB;
  for (int64_t pc = 0; pc < K; pc += KC) {
    int64_t kc = std::min(KC, K - pc);
    PackA<T, MR>(transA, A, lda, M, pc, kc, alpha, Ap.data());
    PackB<T, NR>(transB, B, ldb, pc, kc, 0, N, Bp.data());
    ParallelFor(mTiles * nTiles, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        int64_t ti = t / nTiles, tj = t % nTiles;
        int64_t i0 = ti * MC, j0 = tj * NCB;
        tile(kc, Ap.data() + i0 * kc, Bp.data() + j0 * kc, C + i0 * ldc + j0, ldc, std::min(MC, M - i0),
             std::min(NCB, N - j0));
      }
    });
  }
}

}  // namespace

template <class T>
void Gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (beta != T(1)) {
    ParallelFor(M, 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        T* c = C + i * ldc;
        if (beta == T(0)) std::fill(c, c + N, T(0));
        else
          for (int64_t j = 0; j < N; ++j) c[j] *= beta;
      }
    });
  }
  if (K <= 0 || alpha == T(0)) return;
  using Fn = void (*)(int64_t, const T*, const T*, T*, int64_t, int64_t, int64_t);
#ifdef TESSERA_HAVE_WIDE
  if (HasAvx512()) {
    GemmBlocked<T, Wide<T>>(transA, transB, M, N, K, alpha, A, lda, B, ldb, C, ldc, static_cast<Fn>(TileWide));
    return;
  }
#endif
  GemmBlocked<T, Narrow<T>>(transA, transB, M, N, K, alpha, A, lda, B, ldb, C, ldc, static_cast<Fn>(TileNarrow));
}

template void Gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                          float, float*, int64_t);
template void Gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*,
                           int64_t, double, double*, int64_t);

}  // namespace tessera::cpu
