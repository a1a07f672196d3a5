// Comparisons the GPU tests share: a whole array against a reference, with the tolerance a
// fraction of the reference's largest magnitude (so near-zero elements of a bf16 result are
// judged on the scale of the tensor, not their own).
import assert from "node:assert/strict";
import type { Tensor } from "../../native/index.ts";

function worstOf(ours: ArrayLike<number>, ref: ArrayLike<number>): { worst: number; at: number; max: number } {
  let worst = 0;
  let at = 0;
  let max = 0;
  for (let i = 0; i < ref.length; i++) {
    max = Math.max(max, Math.abs(ref[i]!));
    const d = Math.abs(ours[i]! - ref[i]!);
    // A non-finite difference (an element never written reads NaN under the debug fill) is final.
    if (!Number.isFinite(d)) return { worst: NaN, at: i, max: NaN };
    if (d > worst) {
      worst = d;
      at = i;
    }
  }
  return { worst, at, max };
}

/** max |ours - ref| <= rel * max |ref| + abs (a NaN anywhere in ours fails); returns max |diff| / max |ref|. */
export function assertClose(ours: ArrayLike<number>, ref: ArrayLike<number>, rel: number, what: string, abs = 1e-6): number {
  assert.equal(ours.length, ref.length, `${what}: sizes`);
  const { worst, at, max } = worstOf(ours, ref);
  assert.ok(Number.isFinite(worst), `${what}: element ${at} is ${ours[at]} (reference ${ref[at]})`);
  const tol = rel * max + abs;
  assert.ok(worst <= tol, `${what}: max |diff| ${worst.toExponential(3)} at ${at} (${ours[at]} vs ${ref[at]}) > ${tol.toExponential(3)} (max |ref| ${max.toExponential(3)})`);
  return max > 0 ? worst / max : worst;
}

/**
 * max |ours - ref| <= rel * max |ref| with no absolute slack: the reference's scale alone
 * judges, so a reference of all zeros (which would prove nothing) fails.
 */
export function assertRelClose(ours: ArrayLike<number>, ref: ArrayLike<number>, rel: number, what: string): number {
  let nonZero = false;
  for (let i = 0; i < ref.length && !nonZero; i++) nonZero = ref[i] !== 0;
  assert.ok(nonZero, `${what}: the reference is all zeros; the test proves nothing`);
  return assertClose(ours, ref, rel, what, 0);
}

/** A kernel's result against its reference tensor: still on cuda (no fallback), of the reference's shape, then assertRelClose. */
export function assertTensorClose(got: Tensor, want: Tensor, rel: number, what: string): number {
  assert.equal(got.device, "cuda", `${what}: result should stay on cuda`);
  assert.deepEqual(got.shape, want.shape, `${what}: shape`);
  return assertRelClose(got.toFloat64Array(), want.toFloat64Array(), rel, what);
}
