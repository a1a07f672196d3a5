// GEMMs through cuBLASLt (builds that link it: TESSERA_CUBLASLT): the fast cuda matmul, with
// the tiled kernel of matmul.cu kept as its reference and fallback.
//
// Row-major tensors meet cuBLASLt's column-major convention by swapping the operands: a
// row-major [M,N] C is a column-major [N,M] C^T, and C^T = op(B)^T op(A)^T, so cuBLASLt's A is
// our b and its B is our a, each read with the transpose flag the caller gave (a row-major
// stored matrix is its own column-major transpose). No CUBLASLT_ORDER_ROW layouts: the default
// column order is the one every cuBLASLt kernel supports.
//
// bf16 in / bf16 out, fp32 in / fp32 out, and bf16 in / fp32 out (weight gradients accumulated
// with beta 1 into fp32), all with CUBLAS_COMPUTE_32F (fp32 accumulation; for fp32 inputs that
// means exact fp32 products, no TF32) and fp32 alpha / beta. A bias (y = x W^T + b) is the BIAS
// epilogue, for outputs of the inputs' dtype.
//
// One handle per process. The descriptors and the algorithm are made once per (dtypes, bias,
// batch, M, N, K, transposes, row strides, pointer alignments) and kept in a cache of the
// kMaxPlans most recently used: a training step repeats a few dozen shapes, but packed token
// counts vary. The algorithm is the fastest of cublasLtMatmulAlgoGetHeuristic's first
// kCandidates, timed once on the call's own operands into a scratch output (see Tune): the
// heuristic's first choice is often not the fastest (a 0.5B step's GEMMs 30.3 ms with it, 28.6
// tuned; NOTES.md, 2026-11-24), though the narrowest (the 0.5B kv projections, [8192, 896] x
// [896, 128]) stay at 100-150 TFLOP/s with any candidate. TESSERA_GEMM_TUNE=0 keeps the first
// choice. The workspace comes from the caching allocator on the compute stream, sized by what the
// algorithm asked for (at most kMaxWorkspaceBytes).
#ifdef TESSERA_CUBLASLT

#include <cublasLt.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "cuda/kernels.h"
#include "cuda/runtime.h"

namespace tessera::cuda {
namespace {

constexpr size_t kMaxWorkspaceBytes = size_t{32} << 20;
// Candidates timed per new plan, and the largest output tuned (a scratch output of that size is
// held while timing): 1.5B's fused gate|up [8192, 17920] bf16 (280 MiB) is tuned; the lm head's
// logits chunks (2.3 GiB at T 8192) keep the heuristic's choice.
constexpr int kCandidates = 8;
constexpr size_t kMaxTunedOutputBytes = size_t{512} << 20;

bool TuningOn() {
  static const bool on = [] {
    const char* env = std::getenv("TESSERA_GEMM_TUNE");
    return !(env && std::string(env) == "0");
  }();
  return on;
}

void LtCheck(const char* what, cublasStatus_t status) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw OpError(std::string("matmul: ") + what + " failed: " + cublasLtGetStatusName(status) + ": " +
                cublasLtGetStatusString(status));
}
#define TESSERA_LT_CHECK(call) LtCheck(#call, (call))

cublasLtHandle_t Handle() {
  static std::mutex mu;
  static cublasLtHandle_t handle = nullptr;  // never destroyed: GEMMs may run until exit
  std::lock_guard<std::mutex> lk(mu);
  if (!handle) {
    EnsureInit("matmul");
    TESSERA_LT_CHECK(cublasLtCreate(&handle));
  }
  return handle;
}

/** The largest power of two (up to 256, cuBLASLt's default assumption) that divides the address. */
uint32_t AlignmentOf(const void* p) {
  uintptr_t addr = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && addr % align != 0) align /= 2;
  return align;
}

struct Plan {
  bool found = false;  // false: no cuBLASLt algorithm for this case; the reference GEMM runs
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t ltA = nullptr, ltB = nullptr, ltC = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;
};

void Destroy(Plan& p) {
  if (p.ltC) cublasLtMatrixLayoutDestroy(p.ltC);
  if (p.ltB) cublasLtMatrixLayoutDestroy(p.ltB);
  if (p.ltA) cublasLtMatrixLayoutDestroy(p.ltA);
  if (p.desc) cublasLtMatmulDescDestroy(p.desc);
  p = Plan{};
}

// (dtype, output dtype, bias, batch, M, N, K, transposes, alignments of a, b, c, row strides of a, b, c)
using PlanKey = std::tuple<int, int, bool, int64_t, int64_t, int64_t, int64_t, bool, bool, uint32_t, uint32_t, uint32_t, int64_t,
                           int64_t, int64_t>;

/** A column-major rows x cols matrix whose columns are ld apart (ld >= rows); a batch's matrices lie ld * cols apart. */
cublasLtMatrixLayout_t Layout(cudaDataType_t type, uint64_t rows, uint64_t cols, int64_t ld, int64_t batch) {
  cublasLtMatrixLayout_t layout = nullptr;
  TESSERA_LT_CHECK(cublasLtMatrixLayoutCreate(&layout, type, rows, cols, ld));
  if (batch > 1) {
    int32_t count = static_cast<int32_t>(batch);
    int64_t stride = static_cast<int64_t>(ld * cols);
    try {
      TESSERA_LT_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
      TESSERA_LT_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
    } catch (...) {
      cublasLtMatrixLayoutDestroy(layout);
      throw;
    }
  }
  return layout;
}

cudaDataType_t LtType(DType dt) { return dt == DType::F32 ? CUDA_R_32F : CUDA_R_16BF; }

void Describe(Plan& p, DType dt, DType cDt, bool bias, int64_t batch, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
              const GemmLd& ld) {
  cudaDataType_t type = LtType(dt);
  TESSERA_LT_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // cuBLASLt's A is our b and its B our a (see the top of the file).
  cublasOperation_t opA = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t opB = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  TESSERA_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opA, sizeof(opA)));
  TESSERA_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opB, sizeof(opB)));
  if (bias) {
    // Column-major D is [N,M]: the epilogue's vector runs along D's rows, our columns.
    cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    TESSERA_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
  }
  // Stored shapes, column-major: b is [K,N] row-major (column-major N x K), or [N,K] when tb; a
  // row-major row stride is the column-major leading dimension.
  p.ltA = tb ? Layout(type, K, N, ld.b, batch) : Layout(type, N, K, ld.b, batch);
  p.ltB = ta ? Layout(type, M, K, ld.a, batch) : Layout(type, K, M, ld.a, batch);
  p.ltC = Layout(LtType(cDt), N, M, ld.c, batch);
}

/** The operands of the call that makes a plan, which Tune times the candidates on. */
struct Operands {
  const void* a;
  const void* b;
  const void* bias;
  float alpha, beta;
  size_t outBytes;  // of the output (c and d share its layout)
};

/**
 * The fastest of the heuristic's candidates on this call's operands: each runs once to warm up,
 * then kTuneRuns times between events, into a zeroed scratch output (so a GEMM that accumulates
 * into its output, c == d, is not disturbed). Another candidate replaces the heuristic's first
 * only when it is kTuneMargin faster: the step's big GEMMs have several algorithms within a few
 * percent, where a single timing's noise (clocks, power) would pick at random. A candidate that
 * fails to run is skipped. Blocks the host once per plan. The pick rests on timings, so two
 * processes may pick differently for one shape and their products may differ in the last bits
 * (TESSERA_GEMM_TUNE=0 for runs that must repeat bit for bit).
 */
constexpr int kTuneRuns = 5;
constexpr float kTuneMargin = 0.95f;
int Tune(const Plan& p, const cublasLtMatmulHeuristicResult_t* results, int count, const Operands& x) {
  size_t workspace = 0;
  for (int i = 0; i < count; ++i) workspace = std::max(workspace, results[i].workspaceSize);
  Scratch out(x.outBytes);
  Scratch ws(workspace);
  cudaStream_t s = ComputeStream();
  Check("matmul", "cudaMemsetAsync", cudaMemsetAsync(out.as<void>(), 0, x.outBytes, s));
  if (x.bias) TESSERA_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &x.bias, sizeof(x.bias)));
  // Destroyed on every way out, a failed Check's throw included.
  struct Events {
    cudaEvent_t start = nullptr, stop = nullptr;
    ~Events() {
      if (start) cudaEventDestroy(start);
      if (stop) cudaEventDestroy(stop);
    }
  } ev;
  cudaEvent_t& start = ev.start;
  cudaEvent_t& stop = ev.stop;
  Check("matmul", "cudaEventCreate", cudaEventCreate(&start));
  Check("matmul", "cudaEventCreate", cudaEventCreate(&stop));
  int best = -1;  // the first candidate that runs, until another beats it by the margin
  float bestMs = 0, firstMs = 0;
  for (int i = 0; i < count; ++i) {
    auto run = [&] {
      return cublasLtMatmul(Handle(), p.desc, &x.alpha, x.b, p.ltA, x.a, p.ltB, &x.beta, out.as<void>(), p.ltC, out.as<void>(),
                            p.ltC, &results[i].algo, ws.as<void>(), results[i].workspaceSize, s);
    };
    if (run() != CUBLAS_STATUS_SUCCESS) continue;
    Check("matmul", "cudaEventRecord", cudaEventRecord(start, s));
    bool ok = true;
    for (int r = 0; r < kTuneRuns && ok; ++r) ok = run() == CUBLAS_STATUS_SUCCESS;
    Check("matmul", "cudaEventRecord", cudaEventRecord(stop, s));
    Check("matmul", "cudaEventSynchronize", cudaEventSynchronize(stop));
    float ms = 0;
    Check("matmul", "cudaEventElapsedTime", cudaEventElapsedTime(&ms, start, stop));
    if (!ok) continue;
    if (best < 0) {
      best = i;
      firstMs = bestMs = ms;
    } else if (ms < bestMs && ms < kTuneMargin * firstMs) {
      best = i;
      bestMs = ms;
    }
  }
  CheckLaunch("matmul");
  return best < 0 ? 0 : best;
}

Plan MakePlan(DType dt, DType cDt, bool bias, int64_t batch, int64_t M, int64_t N, int64_t K, bool ta, bool tb, const GemmLd& ld,
              uint32_t alignA, uint32_t alignB, uint32_t alignC, const Operands& x) {
  Plan p;
  cublasLtMatmulPreference_t pref = nullptr;
  try {
    Describe(p, dt, cDt, bias, batch, M, N, K, ta, tb, ld);
    TESSERA_LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t maxWorkspace = kMaxWorkspaceBytes;
    TESSERA_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &maxWorkspace,
                                                          sizeof(maxWorkspace)));
    // Operand roles swapped as above: cuBLASLt's A is b, its B is a.
    TESSERA_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &alignB, sizeof(alignB)));
    TESSERA_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &alignA, sizeof(alignA)));
    TESSERA_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &alignC, sizeof(alignC)));
    TESSERA_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &alignC, sizeof(alignC)));
    cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
    int returned = 0;
    const int asked = TuningOn() && x.outBytes <= kMaxTunedOutputBytes ? kCandidates : 1;
    cublasStatus_t status =
        cublasLtMatmulAlgoGetHeuristic(Handle(), p.desc, p.ltA, p.ltB, p.ltC, p.ltC, pref, asked, results, &returned);
    // NOT_SUPPORTED is the documented answer when no algorithm fits: not an error, a fallback.
    if (status != CUBLAS_STATUS_NOT_SUPPORTED) LtCheck("cublasLtMatmulAlgoGetHeuristic", status);
    if (status == CUBLAS_STATUS_SUCCESS && returned > 0) {
      const int pick = returned > 1 ? Tune(p, results, returned, x) : 0;
      p.found = true;
      p.algo = results[pick].algo;
      p.workspace = results[pick].workspaceSize;
    }
  } catch (...) {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    Destroy(p);
    throw;
  }
  TESSERA_LT_CHECK(cublasLtMatmulPreferenceDestroy(pref));
  // A case without an algorithm is remembered (so it is not asked again) but needs no descriptors.
  if (!p.found) Destroy(p);
  return p;
}

// The plans, least recently used first. A packed batch's token count changes from step to
// step, so the shapes are unbounded over a run: the oldest plan goes beyond kMaxPlans.
constexpr size_t kMaxPlans = 256;
struct PlanCache {
  std::mutex mu;
  std::list<std::pair<PlanKey, Plan>> lru;
  std::map<PlanKey, std::list<std::pair<PlanKey, Plan>>::iterator> index;
};

PlanCache& Plans() {
  static auto* cache = new PlanCache();  // never destroyed, as the handle
  return *cache;
}

/** The plan for key, made when missing; the caller holds the cache's lock while it uses it. */
const Plan& PlanFor(PlanCache& cache, const PlanKey& key, DType dt, DType cDt, bool bias, int64_t batch, int64_t M, int64_t N,
                    int64_t K, bool ta, bool tb, const GemmLd& ld, const Operands& x) {
  auto it = cache.index.find(key);
  if (it != cache.index.end()) {
    cache.lru.splice(cache.lru.end(), cache.lru, it->second);
    return it->second->second;
  }
  Plan p = MakePlan(dt, cDt, bias, batch, M, N, K, ta, tb, ld, std::get<9>(key), std::get<10>(key), std::get<11>(key), x);
  if (cache.lru.size() >= kMaxPlans) {
    Destroy(cache.lru.front().second);
    cache.index.erase(cache.lru.front().first);
    cache.lru.pop_front();
  }
  cache.lru.emplace_back(key, p);
  cache.index[key] = std::prev(cache.lru.end());
  return cache.lru.back().second;
}

// d = alpha op(a) op(b) + beta c (+ bias); c and d share one layout and may be one buffer.
bool LtMatmul(DType dt, const void* a, const void* b, DType cDt, const void* c, void* d, float alpha, float beta, const void* bias,
              int64_t batch, int64_t M, int64_t N, int64_t K, bool ta, bool tb, const GemmLd& strides) {
  if (batch * M * N * K == 0 || batch > INT32_MAX) return false;
  // The epilogue takes the bias in the output's type; fp32 outputs with a bias go to the reference.
  if (bias && (cDt != dt || AlignmentOf(bias) < 16)) return false;
  const GemmLd ld = strides.For(M, N, K, ta, tb);
  PlanKey key{static_cast<int>(dt), static_cast<int>(cDt), bias != nullptr, batch, M, N, K, ta, tb,
              AlignmentOf(a), AlignmentOf(b), std::min(AlignmentOf(c), AlignmentOf(d)), ld.a, ld.b, ld.c};
  PlanCache& cache = Plans();
  // Held until the GEMM is queued: an eviction by another thread must not free descriptors in use.
  std::lock_guard<std::mutex> lk(cache.mu);
  const size_t outBytes = static_cast<size_t>(ld.c * M * batch) * DTypeSize(cDt);
  const Plan& p = PlanFor(cache, key, dt, cDt, bias != nullptr, batch, M, N, K, ta, tb, ld, Operands{a, b, bias, alpha, beta, outBytes});
  if (!p.found) return false;
  if (bias) {
    TESSERA_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  Scratch workspace(p.workspace);
  TESSERA_LT_CHECK(cublasLtMatmul(Handle(), p.desc, &alpha, b, p.ltA, a, p.ltB, &beta, c, p.ltC, d, p.ltC, &p.algo,
                                  workspace.as<void>(), p.workspace, ComputeStream()));
  CheckLaunch("matmul");
  return true;
}

}  // namespace

bool MatmulLtInto(DType dt, const void* a, const void* b, DType cDt, void* c, float beta, const void* bias, int64_t batch,
                  int64_t M, int64_t N, int64_t K, bool ta, bool tb, const GemmLd& ld) {
  return LtMatmul(dt, a, b, cDt, c, c, 1.f, beta, bias, batch, M, N, K, ta, tb, ld);
}

bool MatmulLtAxpby(DType dt, const void* a, const void* b, DType cDt, const void* c, void* d, float alpha, float beta, int64_t batch,
                   int64_t M, int64_t N, int64_t K, bool ta, bool tb) {
  return LtMatmul(dt, a, b, cDt, c, d, alpha, beta, nullptr, batch, M, N, K, ta, tb, {});
}

}  // namespace tessera::cuda

#endif  // TESSERA_CUBLASLT
