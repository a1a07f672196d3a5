// The global gradient norm (float64 accumulation) and clipping by it.
import { ops, type PendingSum } from "../ops.ts";
import type { OptimParam } from "./types.ts";

/**
 * The sum of squares of this process's gradients, in float64. Under data or FSDP
 * parallelism, all-reduce this across the group and pass sqrt of the sum to clipGradNorm.
 */
export function gradSumSquares(params: readonly OptimParam[]): number {
  return gradSumSquaresQueued(params).read();
}

/** gradSumSquares left on the device until read (ops.sumSquaresOfQueued): the host may prepare the optimizer's step meanwhile. */
export function gradSumSquaresQueued(params: readonly OptimParam[]): PendingSum {
  return ops.sumSquaresOfQueued(params.flatMap((p) => (p.grad ? [p.grad] : [])));
}

export function gradNorm(params: readonly OptimParam[]): number {
  return Math.sqrt(gradSumSquares(params));
}

export interface ClipResult {
  /** The norm before clipping (NaN or Infinity when a gradient holds one). */
  norm: number;
  /** Whether the gradients were scaled down. */
  clipped: boolean;
  /** False when the norm is NaN or infinite: the gradients are left as they are and the step must be skipped. */
  finite: boolean;
  /** What the gradients are (or, with scaleGrads false, must be) multiplied by: maxNorm / norm when clipped, else 1. */
  scale: number;
}

/**
 * Scales every gradient by maxNorm / norm when norm > maxNorm, so the clipped norm is
 * maxNorm (torch divides by norm + 1e-6 and lands a hair under it). maxNorm 0 turns
 * clipping off but still measures. `norm` may be given (the all-reduced global norm);
 * otherwise it is computed from these gradients. With `scaleGrads: false` the gradients are
 * left alone and `scale` is for optimizer.step(lr, scale).
 */
export function clipGradNorm(params: readonly OptimParam[], maxNorm: number, opts: { norm?: number; scaleGrads?: boolean } = {}): ClipResult {
  if (!Number.isFinite(maxNorm) || maxNorm < 0) throw new Error(`clipGradNorm: maxNorm must be a finite number >= 0, got ${maxNorm}`);
  const norm = opts.norm ?? gradNorm(params);
  if (!Number.isFinite(norm)) return { norm, clipped: false, finite: false, scale: 1 };
  if (maxNorm === 0 || norm <= maxNorm) return { norm, clipped: false, finite: true, scale: 1 };
  const s = maxNorm / norm;
  // With scaleGrads false the caller passes the scale to optimizer.step, which folds it into the update.
  if (opts.scaleGrads ?? true) for (const p of params) if (p.grad) ops.scaleInPlace(p.grad, s);
  return { norm, clipped: true, finite: true, scale: s };
}

/** Drops every gradient (the next backward starts from zero). */
export function zeroGrad(params: readonly OptimParam[]): void {
  for (const p of params) p.zeroGrad();
}
