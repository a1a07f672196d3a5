// Fused linear + cross-entropy, chunked over tokens so the [T,V] logits never exist.
import { loadAddon } from "./addon.ts";
import { Tensor } from "./tensor.ts";
import { fail, needDtype, needFinite, needFloat, needRank, needSameDtype, needShape, needCpu } from "./check.ts";

export interface LinearCrossEntropyOptions {
  ignoreIndex?: number;
  /** Tokens per chunk; by default about 16M logits' worth. */
  chunkSize?: number;
  /** The returned gradients are those of gradScale * (sum of token losses); 1/globalCount for a mean. */
  gradScale?: number;
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
  const chunkSize = opts.chunkSize ?? Math.max(16, Math.floor((1 << 24) / Math.max(V, 1)));
  if (!Number.isInteger(chunkSize) || chunkSize < 1) fail(op, `chunkSize must be a positive integer, got ${chunkSize}`);
  const gradScale = opts.gradScale ?? 1;
  needFinite(op, "gradScale", gradScale);
  return { ignoreIndex, chunkSize, gradScale };
}

/**
 * Loss of logits = x @ w^T against labels: returns the summed loss over counted tokens
 * (labels != ignoreIndex), their count, and the gradients of gradScale * loss.
 */
export function linearCrossEntropy(
  x: Tensor,
  w: Tensor,
  labels: Tensor,
  opts: LinearCrossEntropyOptions = {},
): { loss: number; count: number; dx: Tensor; dw: Tensor } {
  const op = "linearCrossEntropy";
  needCpu(op, ["x", x], ["w", w], ["labels", labels]);
  const { ignoreIndex, chunkSize, gradScale } = check(op, x, w, labels, opts);
  const [loss, count, dx, dw] = loadAddon().linearCrossEntropy(
    x.handle(op, "x"),
    w.handle(op, "w"),
    labels.handle(op, "labels"),
    ignoreIndex,
    chunkSize,
    gradScale,
    true,
  );
  return { loss, count, dx: new Tensor(dx!, x.dtype, x.shape), dw: new Tensor(dw!, w.dtype, w.shape) };
}

/** The loss alone (evaluation): no gradients are formed. */
export function linearCrossEntropyLoss(
  x: Tensor,
  w: Tensor,
  labels: Tensor,
  opts: Omit<LinearCrossEntropyOptions, "gradScale"> = {},
): { loss: number; count: number } {
  const op = "linearCrossEntropyLoss";
  needCpu(op, ["x", x], ["w", w], ["labels", labels]);
  const { ignoreIndex, chunkSize } = check(op, x, w, labels, opts);
  const [loss, count] = loadAddon().linearCrossEntropy(
    x.handle(op, "x"),
    w.handle(op, "w"),
    labels.handle(op, "labels"),
    ignoreIndex,
    chunkSize,
    1,
    false,
  );
  return { loss, count };
}
