// Varlen flash attention on the GPU (attention.cu): bf16 q/k/v/o, fp32 log-sum-exp and
// accumulation. Pointers are device pointers; the caller has validated cu_seqlens on the host
// (that is where batch and maxLen come from).
#pragma once
#include <cstdint>

namespace tessera::cuda {

struct AttentionShape {
  int64_t T, Hq, Hkv, Dh;
  int64_t batch;   // sequences: cu_seqlens holds batch + 1 offsets
  int64_t maxLen;  // the longest sequence: sizes the grid
  bool causal;
  int64_t window;  // 0: none
  float scale;
};

/**
 * Which kernels run attention. Auto: Hopper's wgmma kernels (attention_wgmma.cu) where they were
 * built (sm_90a) and the device is compute capability 9.0, else the mma.sync kernels
 * (attention.cu), which also serve as their reference in the GPU tests and benches.
 */
enum class AttentionKernels { Auto, MmaSync, Wgmma };
/** Throws OpError naming op when Wgmma is asked for where those kernels cannot run. */
void SetAttentionKernels(const char* op, AttentionKernels kernels);
/** The family the next call will use ("wgmma" or "mma"). */
const char* AttentionKernelsInUse();
/** Whether the wgmma family can run here (an sm_90a build on a compute capability 9.0 GPU). */
bool AttentionWgmmaRuns(const char* op);

/** Head dims the kernels are built for; others are refused by the binding. */
bool AttentionHeadDimSupported(int64_t Dh);

/** o[T,Hq,Dh] (bf16) and lse[Hq,T] (fp32, natural log) from bf16 q, k, v. */
void AttentionForward(const AttentionShape& s, const void* q, const void* k, const void* v, const int32_t* cu, void* o,
                      float* lse);

/**
 * dq, dk, dv (bf16). Scratch: acc holds T*(Hq + 2*Hkv)*Dh floats, the fp32 sums of dq, then dk
 * and dv (zeroed here, added into by the main kernel's atomics: dk and dv of a kv head gather
 * its q heads' shares there, then all three are cast); rowDot holds Hq*T floats
 * (rowsum(dout * o)). With dq, dk and dv null the cast is skipped: the gradients are acc's sums.
 */
void AttentionBackward(const AttentionShape& s, const void* dout, const void* q, const void* k, const void* v,
                       const void* o, const float* lse, const int32_t* cu, void* dq, void* dk, void* dv, float* acc,
                       float* rowDot);

/** Whether the wgmma kernels' grid (blocks of the longest sequence on its z, at most 65535) takes this shape; else the mma.sync kernels run. */
bool AttentionWgmmaGridFits(const AttentionShape& s);

/** The wgmma forward (attention_wgmma.cu); AttentionForward dispatches to it. */
void AttentionForwardWgmma(const AttentionShape& s, const void* q, const void* k, const void* v, const int32_t* cu, void* o,
                           float* lse);

/** The wgmma backward's main kernel (attention_wgmma.cu), with AttentionBackward's scratch split out. */
void AttentionBackwardWgmma(const AttentionShape& s, const void* dout, const void* q, const void* k, const void* v,
                            const float* lse, const int32_t* cu, float* dqAcc, float* dkAcc, float* dvAcc,
                            const float* rowDot);

}  // namespace tessera::cuda
