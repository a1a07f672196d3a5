// Loading of the compiled addon and the shape of its raw functions. Only native/*.ts calls
// these; they take handles and plain numbers, and trust the TypeScript face to have checked
// shapes and dtypes (they recheck what keeps memory safe, and data such as ids and cu_seqlens).
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

export interface BuildInfo {
  cpu: boolean;
  cuda: boolean;
  cudaDevices: number;
  cublasLt: boolean;
  nccl: boolean;
}

/** An opaque reference to native tensor storage. */
export type Handle = { readonly __nativeTensor: unique symbol };
type H = Handle;
/** An opaque reference to a CUDA event. */
export type EventHandle = { readonly __cudaEvent: unique symbol };

export interface CudaMemoryStats {
  /** Bytes of blocks handed out by the caching allocator (by size class), live now. */
  allocated: number;
  /** Bytes obtained from cudaMalloc and not yet given back: allocated plus the cache. */
  reserved: number;
  /** The most `allocated` has been since the start or the last resetPeak. */
  peak: number;
  /** cudaMalloc calls so far: flat from step to step once the cache is warm. */
  mallocs: number;
  /** cudaFree calls so far (emptyCache, and retries after running out of memory). */
  frees: number;
}

/** GEMMs run on cuda so far, by path: cuBLASLt, or the tiled reference kernel. */
export interface CudaMatmulCounts {
  cublasLt: number;
  reference: number;
}

/**
 * The CUDA ops (present in builds with CUDA). Where a CPU op of the same name exists the
 * signature is the same; float tensors are float32 or bfloat16, and parameter gradients
 * (embedding dW, RMSNorm dw, LayerNorm dw and db) and statistics (rstd, mean) come back float32.
 */
export interface CudaAddon
  extends Pick<
    Addon,
    | "cast" | "matmul" | "add" | "mul" | "scale" | "scaleInPlace" | "addInto" | "sumSquares" | "embedding" | "embeddingBackward"
    | "rmsnorm" | "rope" | "ropeTable" | "ropeWithTable" | "swiglu" | "swigluBackward"
    | "addBias" | "sumRows" | "copyColumns" | "linearCrossEntropy"
    | "layernorm" | "layernormBackward" | "gelu" | "geluBackward"
    | "attention" | "attentionBackward"
  > {
  init(): void;
  /** As the CPU op; with `residualGrad`, dx comes back plus it (a pre-norm block's residual seam in one pass). */
  rmsnormBackward(dy: H, x: H, w: H, rstd: H, residualGrad?: H): [H, H];
  memoryStats(): CudaMemoryStats;
  resetPeak(): void;
  emptyCache(): number;
  setDebugFill(on: boolean): void;
  attentionKernels(which?: "auto" | "mma" | "wgmma"): "mma" | "wgmma";
  attentionFamilies(): ("mma" | "wgmma")[];
  synchronize(): void;
  recordEvent(stream: number, timed?: boolean): EventHandle;
  eventElapsedMs(start: EventHandle, end: EventHandle): number;
  waitEvent(stream: number, event: EventHandle): void;
  eventSynchronize(event: EventHandle): void;
  debugBadLaunch(): void;
  matmulCounts(): CudaMatmulCounts;
  /** ropeWithTable of q and k (same T, Dh and dtype) in one launch: [q', k']. */
  ropeQKWithTable(q: H, k: H, table: H, inverse: boolean): [H, H];
  ropeQKVSplit(qkv: H, table: H, numHeads: number, numKvHeads: number): [H, H, H];
  /** [dqkv] of outDtype (a dtype code), or [dqkv, its column sums] with columnSums. */
  ropeQKVBackwardCat(dq: H, dk: H, dv: H, table: H, outDtype: number, columnSums: boolean): H[];
  embeddingBackwardInto(dw: H, dy: H, ids: H, idsChecked?: boolean): void;
  swigluPacked(gu: H): H;
  swigluPackedBackward(dh: H, gu: H): H;
  /** out (float32 or a's dtype) = op(a) op(b), or += with accumulate. */
  matmulInto(out: H, a: H, b: H, transA: boolean, transB: boolean, accumulate: boolean, reference?: boolean): void;
  /** [y, sum, rstd float32]: sum = x + residual, y = rmsnorm(sum). */
  rmsnormResidual(x: H, residual: H, w: H, eps: number): [H, H, H];
  /** The sum of squares of all ts, queued into a float64 [1] cuda tensor (nothing waits). */
  sumSquaresManyQueued(ts: H[]): H;
  adamwStep(
    p: H, g: H, m: H, v: H, lr: number, b1: number, b2: number, eps: number, wd: number, step: number, copy?: H,
  ): void;
  /** items: [p, g, m, v, copy | null, lr, weightDecay, step], checked and laid out; launched (once) by adamwStepManyLaunch. */
  adamwStepManyPrepare(items: [H, H, H, H, H | null, number, number, number][], b1: number, b2: number, eps: number): H;
  adamwStepManyLaunch(prepared: H, gradScale: number): void;
  /** Releases a prepared step that will not run (its tensors' storage); a later launch is refused. */
  adamwStepManyDrop(prepared: H): void;
  /** The CPU's newtonSchulz5 (float32 or bfloat16 g), in bf16 with fp32 accumulation; `reference` takes the tiled GEMM over cuBLASLt. */
  newtonSchulz5(g: H, steps: number, reference?: boolean): H;
  /** The CPU's muonStep on float32 p, g, buf; copy (bfloat16) receives the updated weights in the same pass. */
  muonStep(p: H, g: H, buf: H, lr: number, momentum: number, nesterov: boolean, wd: number, nsSteps: number, copy?: H): void;
}

export interface Addon {
  buildInfo(): BuildInfo;
  numThreads(): number;
  liveBytes(device?: number): number;
  emptyCache(): number;
  cachedBytes(): number;
  fromArray(dtype: number, shape: number[], data: Float32Array | Float64Array | Int32Array | BigInt64Array, device?: number): H;
  toArray(t: H): Float32Array | Float64Array | Int32Array | BigInt64Array;
  toDevice(t: H, device: number): H;
  deviceOf(t: H): number;
  zeros(dtype: number, shape: number[], device?: number): H;
  empty(dtype: number, shape: number[], device?: number): H;
  randn(dtype: number, shape: number[], seed: number, std: number): H;
  view(t: H, shape: number[]): H;
  viewRows(t: H, start: number, count: number): H;
  clone(t: H): H;
  copyInto(dst: H, src: H): void;
  release(t: H): void;
  cast(t: H, dtype: number): H;
  /**
   * `reference` (cuda only; the CPU ignores it) forces the tiled GEMM over cuBLASLt; `bias` (cuda
   * only; the CPU ignores it) is added to every row.
   */
  matmul(a: H, b: H, transA: boolean, transB: boolean, reference?: boolean, bias?: H): H;
  add(a: H, b: H): H;
  mul(a: H, b: H): H;
  scale(a: H, s: number): H;
  scaleInPlace(a: H, s: number): void;
  addInto(dst: H, src: H, alpha: number): void;
  addBias(x: H, b: H): H;
  sumRows(dy: H): H;
  /** Between one [R, W] and parts [R, w_i] side by side in it (at most maxColumnParts): split copies one out to the parts, else in. */
  copyColumns(one: H, parts: H[], split: boolean, op: string): void;
  /** The most parts copyColumns takes, on either backend. */
  readonly maxColumnParts: number;
  sumSquares(t: H): number;
  /** idsChecked: the caller checked the ids on the host, so cuda reads back no out-of-range flag (no wait); the CPU checks regardless. */
  embedding(w: H, ids: H, idsChecked?: boolean): H;
  embeddingBackward(dy: H, ids: H, vocab: number, idsChecked?: boolean): H;
  rmsnorm(x: H, w: H, eps: number): [H, H];
  rmsnormBackward(dy: H, x: H, w: H, rstd: H): [H, H];
  layernorm(x: H, w: H, b: H, eps: number): [H, H, H];
  layernormBackward(dy: H, x: H, w: H, mean: H, rstd: H): [H, H, H];
  rope(x: H, positions: H, invFreq: Float64Array, attentionScaling: number, inverse: boolean): H;
  /** [T, 2, half] of `dtype` (cuda: float32 only): each position's cos, then sin, times attentionScaling. */
  ropeTable(positions: H, invFreq: Float64Array, attentionScaling: number, dtype: number): H;
  ropeWithTable(x: H, table: H, inverse: boolean): H;
  swiglu(gate: H, up: H): H;
  swigluBackward(dh: H, gate: H, up: H): [H, H];
  gelu(x: H): H;
  geluBackward(dy: H, x: H): H;
  softmax(x: H): H;
  softmaxBackward(dy: H, y: H): H;
  /** cuHost: the offsets on the host (cuda: validated there instead of read back; the CPU ignores it). */
  attention(q: H, k: H, v: H, cu: H, causal: boolean, window: number, scale: number, cuHost?: Int32Array): [H, H];
  /** float32Grads (cuda only; the CPU's are in q's dtype already): dq, dk, dv as the kernels' fp32 sums, no cast pass. */
  attentionBackward(
    dout: H, q: H, k: H, v: H, o: H, lse: H, cu: H, causal: boolean, window: number, scale: number, cuHost?: Int32Array, float32Grads?: boolean,
  ): [H, H, H];
  /** `reference` (cuda only; the CPU ignores it) runs the lm head's GEMMs on the tiled reference kernel, as matmul's. */
  linearCrossEntropy(
    x: H, w: H, labels: H, ignoreIndex: number, chunkSize: number, gradScale: number, wantGrad: boolean, reference?: boolean,
  ): [number, number, H?, H?];
  adamwStep(p: H, g: H, m: H, v: H, lr: number, b1: number, b2: number, eps: number, wd: number, step: number): void;
  newtonSchulz5(g: H, steps: number): H;
  muonStep(p: H, g: H, buf: H, lr: number, momentum: number, nesterov: boolean, wd: number, nsSteps: number): void;
  /** Absent when the addon was built without CUDA. */
  cuda?: CudaAddon;
}

const here = dirname(fileURLToPath(import.meta.url));
const addonPath = join(here, "build", "Release", "tessera_native.node");

let addon: Addon | undefined;

/** Loads the compiled addon once; a missing build is an error that says how to make one. */
export function loadAddon(): Addon {
  if (addon) return addon;
  if (!existsSync(addonPath)) {
    throw new Error(`native addon not built: ${addonPath} is missing; run \`npm run build:native\``);
  }
  addon = createRequire(import.meta.url)(addonPath) as Addon;
  return addon;
}

export function buildInfo(): BuildInfo {
  return loadAddon().buildInfo();
}

/** Bytes of freed host blocks kept for reuse (not counted by liveTensors). */
export function cachedBytes(): number {
  return loadAddon().cachedBytes();
}

/** Returns the cached host blocks to the system; the bytes given back. */
export function emptyCache(): number {
  return loadAddon().emptyCache();
}

/** Threads of the CPU kernels' pool (env TESSERA_CPU_THREADS, else the core count). */
export function cpuThreads(): number {
  return loadAddon().numThreads();
}
