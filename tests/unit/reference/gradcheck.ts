// Central finite differences in float64 for the native ops' backward functions.
import assert from "node:assert/strict";

/**
 * Checks analytic gradients of L = sum(f(inputs) * r) against central differences.
 * `f` maps the float64 inputs to the output; `analytic` returns dL/dinput for each input
 * listed in `wrt` given the same inputs. Tolerance: |a - n| <= atol + rtol * |n|.
 */
export function gradcheck(opts: {
  inputs: Float64Array[];
  wrt: number[];
  f: (inputs: Float64Array[]) => Float64Array;
  analytic: (inputs: Float64Array[], r: Float64Array) => Float64Array[];
  r: Float64Array;
  eps?: number;
  rtol?: number;
  atol?: number;
  label: string;
}): void {
  const { inputs, f, r } = opts;
  const eps = opts.eps ?? 1e-6;
  const rtol = opts.rtol ?? 1e-6;
  const atol = opts.atol ?? 1e-8;
  const loss = (xs: Float64Array[]) => {
    const y = f(xs);
    let s = 0;
    for (let i = 0; i < y.length; i++) s += y[i]! * r[i]!;
    return s;
  };
  const grads = opts.analytic(inputs, r);
  opts.wrt.forEach((which, gi) => {
    const x = inputs[which]!;
    const g = grads[gi]!;
    assert.equal(g.length, x.length, `${opts.label}: gradient ${gi} has the wrong size`);
    for (let i = 0; i < x.length; i++) {
      const keep = x[i]!;
      x[i] = keep + eps;
      const lp = loss(inputs);
      x[i] = keep - eps;
      const lm = loss(inputs);
      x[i] = keep;
      const num = (lp - lm) / (2 * eps);
      const err = Math.abs(g[i]! - num);
      assert.ok(
        err <= atol + rtol * Math.abs(num),
        `${opts.label}: d/dinput${which}[${i}] analytic ${g[i]} vs numeric ${num} (err ${err.toExponential(2)})`,
      );
    }
  });
}

export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: { rtol: number; atol: number }, label: string): void {
  assert.equal(actual.length, expected.length, `${label}: length ${actual.length} vs ${expected.length}`);
  let worst = 0, at = -1;
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i]! - expected[i]!) - tol.rtol * Math.abs(expected[i]!);
    if (!(err <= tol.atol) && (at < 0 || err > worst)) {
      worst = err;
      at = i;
    }
  }
  assert.ok(at < 0, `${label}: element ${at} is ${actual[at]} but expected ${expected[at]} (rtol ${tol.rtol}, atol ${tol.atol})`);
}
