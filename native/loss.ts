// Fused linear + cross-entropy, chunked over tokens so the [T,V] logits never exist.
import { Tensor } from "./tensor.ts";
import { dtypeBytes } from "./dtype.ts";
import { backendFor } from "./cuda.ts";
import { fail, needDtype, needFinite, needFloat, needRank, needSameDtype, needShape } from "./check.ts";

export interface LinearCrossEntropyOptions {
  ignoreIndex?: number;
  /**
   * Tokens per chunk; by default about 16M logits' worth on the CPU, and on cuda equal chunks of
   * at most 2.6 GB of logits (T = 8192 at V = 151936 in bf16: one chunk): big GEMMs, few passes
   * over the fp32 weight gradient, a bounded buffer. One chunk of 8192 against two of 4096 on an
   * H100 (native/NOTES.md): 18.77 -> 18.01 ms at D = 1536, 12.77 -> 12.68 at D = 896, for 1.3 GB
   * more scratch.
   */
  chunkSize?: number;
  /** The returned gradients are those of gradScale * (sum of token losses); 1/globalCount for a mean. */
  gradScale?: number;
  /**
   * cuda only (the CPU ignores it): the lm head's GEMMs on the tiled reference kernel instead of
   * cuBLASLt, as matmul's option: the path of builds without cuBLASLt, for tests.
   */
  reference?: boolean;
}
const CUDA_LOGIT_BYTES = 2.6e9;

function defaultChunk(x: Tensor, V: number): number {
  if (x.device !== "cuda") return Math.max(16, Math.floor((1 << 24) / Math.max(V, 1)));
  const bytes = dtypeBytes[x.dtype];
  // Equal chunks of at most CUDA_LOGIT_BYTES, each a multiple of 128 rows (whole GEMM tiles):
  // every chunk re-reads and re-writes the fp32 [V, D] weight gradient, so fewer is faster.
  const T = Math.max(x.shape[0]!, 1);
  const chunks = Math.ceil((T * Math.max(V, 1) * bytes) / CUDA_LOGIT_BYTES);
  return Math.max(128, Math.ceil(T / chunks / 128) * 128);
}

function check(op: string, x: Tensor, w: Tensor, labels: Tensor, opts: LinearCrossEntropyOptions) {
  needFloat(op, "x", x);
  needSameDtype(op, ["x", x], ["w", w]);
  needRank(op, "x", x, [2]);
  needShape(op, "w", w, [-1, x.shape[1]!]);
  needDtype(op, "labels", labels, "int32");
  needShape(op, "labels", labels, [x.shape[0]!]);
  const ignoreIndex = opts.ignoreIndex ?? -100;
  if (!Number.isInteger(ignoreIndex)) fail(op, "ignoreIndex must be an integer");
  const V = w.shape[0]!;
  const chunkSize = opts.chunkSize ?? defaultChunk(x, V);
  if (!Number.isInteger(chunkSize) || chunkSize < 1) fail(op, `chunkSize must be a positive integer, got ${chunkSize}`);
  const gradScale = opts.gradScale ?? 1;
  needFinite(op, "gradScale", gradScale);
  return { ignoreIndex, chunkSize, gradScale };
}

/**
 * Loss of logits = x @ w^T against labels: returns the summed loss over counted tokens
 * (labels != ignoreIndex), their count, and the gradients of gradScale * loss. On cuda dw is
 * float32 (a parameter gradient, accumulated over the chunks in fp32) and dx takes x's dtype;
 * the host waits for the device once, to read the loss.
 */
export function linearCrossEntropy(
  x: Tensor,
  w: Tensor,
  labels: Tensor,
  opts: LinearCrossEntropyOptions = {},
): { loss: number; count: number; dx: Tensor; dw: Tensor } {
  const op = "linearCrossEntropy";
  const raw = backendFor(op, "linearCrossEntropy", ["x", x], ["w", w], ["labels", labels]);
  const { ignoreIndex, chunkSize, gradScale } = check(op, x, w, labels, opts);
  const [loss, count, dx, dw] = raw(
    x.handle(op, "x"),
    w.handle(op, "w"),
    labels.handle(op, "labels"),
    ignoreIndex,
    chunkSize,
    gradScale,
    true,
    opts.reference ?? false,
  );
  const dwDtype = x.device === "cuda" ? "float32" : w.dtype;
  return { loss, count, dx: new Tensor(dx!, x.dtype, x.shape), dw: new Tensor(dw!, dwDtype, w.shape) };
}

/** The loss alone (evaluation): no gradients are formed. */
export function linearCrossEntropyLoss(
  x: Tensor,
  w: Tensor,
  labels: Tensor,
  opts: Omit<LinearCrossEntropyOptions, "gradScale"> = {},
): { loss: number; count: number } {
  const op = "linearCrossEntropyLoss";
  const raw = backendFor(op, "linearCrossEntropy", ["x", x], ["w", w], ["labels", labels]);
  const { ignoreIndex, chunkSize } = check(op, x, w, labels, opts);
  const [loss, count] = raw(
    x.handle(op, "x"),
    w.handle(op, "w"),
    labels.handle(op, "labels"),
    ignoreIndex,
    chunkSize,
    1,
    false,
    opts.reference ?? false,
  );
  return { loss, count };
}
