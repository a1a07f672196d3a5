import { test } from "node:test";
import assert from "node:assert/strict";
import { AdamW, clipGradNorm, gradNorm, gradSumSquares, zeroGrad } from "../../models/optim/index.ts";
import { param, rand, setGrad, toF32, values } from "./optim-reference.ts";
import type { Param } from "../../models/index.ts";

function withGrads(run: (ps: Param[], grads: Float64Array[]) => void): void {
  const shapes = [[8, 5], [5], [3, 3]];
  const ps = shapes.map((s, i) => param(`p${i}`, rand(s.reduce((a, b) => a * b, 1), i), s));
  const grads = ps.map((p, i) => toF32(rand(p.value.numel, 100 + i, 3)));
  ps.forEach((p, i) => setGrad(p, grads[i]!));
  try {
    run(ps, grads);
  } finally {
    for (const p of ps) p.dispose();
  }
}

const refNorm = (gs: Float64Array[]) => Math.sqrt(gs.reduce((s, g) => s + g.reduce((a, x) => a + x * x, 0), 0));

test("clipGradNorm reports the pre-clip norm and scales the gradients so their norm is maxNorm", () => {
  withGrads((ps, grads) => {
    const norm = refNorm(grads);
    assert.ok(Math.abs(gradNorm(ps) - norm) <= 1e-12 * norm, "float64-accumulated norm");
    const maxNorm = norm / 4;
    const r = clipGradNorm(ps, maxNorm);
    assert.equal(r.finite, true);
    assert.equal(r.clipped, true);
    assert.ok(Math.abs(r.norm - norm) <= 1e-12 * norm);
    assert.ok(Math.abs(gradNorm(ps) - maxNorm) <= 1e-6 * maxNorm, `clipped norm ${gradNorm(ps)} vs ${maxNorm}`);
    ps.forEach((p, i) => {
      const got = values(p.grad!);
      grads[i]!.forEach((g, j) => assert.ok(Math.abs(got[j]! - g / 4) <= 1e-6 * Math.abs(g / 4) + 1e-12, `${p.name}[${j}]`));
    });
  });
});

test("below maxNorm, or with maxNorm 0 (clipping off), the gradients are left bit for bit", () => {
  withGrads((ps, grads) => {
    const norm = refNorm(grads);
    for (const maxNorm of [norm * 2, 0]) {
      const r = clipGradNorm(ps, maxNorm);
      assert.deepEqual({ clipped: r.clipped, finite: r.finite }, { clipped: false, finite: true });
      ps.forEach((p, i) => assert.deepEqual(values(p.grad!), grads[i]));
    }
    assert.throws(() => clipGradNorm(ps, -1), /maxNorm must be a finite number >= 0/);
  });
});

test("a given (all-reduced) norm decides the clip instead of the local one", () => {
  withGrads((ps, grads) => {
    const local = refNorm(grads);
    assert.ok(Math.abs(gradSumSquares(ps) - local * local) <= 1e-12 * local * local);
    const r = clipGradNorm(ps, 1, { norm: 10 });
    assert.equal(r.norm, 10);
    ps.forEach((p, i) => assertScaled(values(p.grad!), grads[i]!, 0.1));
  });
});

function assertScaled(got: Float64Array, g: Float64Array, s: number): void {
  g.forEach((x, j) => assert.ok(Math.abs(got[j]! - x * s) <= 1e-6 * Math.abs(x * s) + 1e-12, `[${j}]`));
}

test("a NaN or infinite gradient is reported as not finite; gradients, parameters and optimizer state stay untouched", () => {
  withGrads((ps, grads) => {
    const opt = new AdamW(ps, { weightDecay: 0.1 });
    try {
      opt.step(1e-2);
      const stateBefore = opt.stateDict();
      const paramsBefore = ps.map((p) => values(p.value));
      for (const bad of [Number.NaN, Number.POSITIVE_INFINITY]) {
        const g = Float64Array.from(grads[1]!);
        g[2] = bad;
        setGrad(ps[1]!, g);
        const r = clipGradNorm(ps, 1);
        assert.equal(r.finite, false);
        assert.equal(r.clipped, false);
        assert.ok(Number.isNaN(bad) ? Number.isNaN(r.norm) : r.norm === Infinity, `norm ${r.norm}`);
        assert.deepEqual(values(ps[0]!.grad!), grads[0], "other gradients are not scaled");
        // The trainer's contract: a non-finite norm skips the step.
        if (r.finite) opt.step(1e-2);
      }
      assert.deepEqual(opt.stateDict(), stateBefore);
      assert.equal(opt.stepCount, 1);
      ps.forEach((p, i) => assert.deepEqual(values(p.value), paramsBefore[i]));
    } finally {
      opt.dispose();
    }
  });
});

test("zeroGrad drops every gradient; parameters without one are skipped by the norm and the step", () => {
  withGrads((ps) => {
    zeroGrad(ps);
    assert.ok(ps.every((p) => p.grad === undefined));
    assert.equal(gradNorm(ps), 0);
    assert.deepEqual(clipGradNorm(ps, 1), { norm: 0, clipped: false, finite: true, scale: 1 });
    const before = ps.map((p) => values(p.value));
    const opt = new AdamW(ps, { weightDecay: 0.5 });
    try {
      opt.step(0.1);
      // torch leaves grad-None parameters alone: not even weight decay touches them.
      ps.forEach((p, i) => assert.deepEqual(values(p.value), before[i]));
      assert.deepEqual(opt.stateDict().params, {});
    } finally {
      opt.dispose();
    }
  });
});

test("with scaleGrads false the gradients stay put, and optimizer.step(lr, scale) equals clipping first, bit for bit", () => {
  const run = (fold: boolean): Float64Array[] => {
    let out: Float64Array[] = [];
    withGrads((ps, grads) => {
      const opt = new AdamW(ps, { betas: [0.9, 0.95], eps: 1e-8, weightDecay: 0.1 });
      const r = clipGradNorm(ps, refNorm(grads) / 3, { scaleGrads: !fold });
      assert.equal(r.clipped, true);
      assert.ok(Math.abs(r.scale - 1 / 3) <= 1e-12);
      if (fold) ps.forEach((p, i) => assert.deepEqual(values(p.grad!), grads[i], "the gradients are not scaled"));
      opt.step(1e-2, fold ? r.scale : 1);
      out = ps.map((p) => values(p.value));
      opt.dispose();
    });
    return out;
  };
  assert.deepEqual(run(true), run(false));
});
