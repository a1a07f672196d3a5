import { test } from "node:test";
import assert from "node:assert/strict";
import {
  tensor, scope, embedding, embeddingBackward, rmsnorm, rmsnormBackward, layernorm, layernormBackward, swiglu, swigluBackward,
  gelu, geluBackward, softmax, softmaxBackward, rope, ropeBackward, ropeFrequencies, type RopeOptions,
  ropeTable, ropeWithTable, ropeBackwardWithTable,
} from "../../native/index.ts";
import * as ref from "./reference/ops.ts";
import { assertClose, gradcheck } from "./reference/gradcheck.ts";

const f32 = (a: Float64Array, shape: number[]) => tensor(Float32Array.from(a), shape);
const f64 = (a: Float64Array, shape: number[]) => tensor(a, shape, { dtype: "float64" });
const i32 = (a: ArrayLike<number>) => tensor(Int32Array.from(a), [a.length], { dtype: "int32" });
const arr = (t: { toArray(): ArrayLike<unknown> }) => Float64Array.from(t.toArray() as ArrayLike<number>);
const F32_TOL = { rtol: 1e-5, atol: 1e-5 };
const GRAD_TOL = { rtol: 1e-6, atol: 1e-8 };

test("embedding forward and backward match the reference; bad ids throw", () => {
  scope(() => {
    const [V, D] = [11, 5];
    const w = ref.randArray(V * D, 1);
    const ids = Int32Array.from([3, 0, 10, 3, 7]);
    assertClose(arr(embedding(f32(w, [V, D]), i32(ids))), ref.embedding(w, ids, D), { rtol: 0, atol: 1e-7 }, "embedding");
    assertClose(arr(embedding(f32(w, [V, D]), i32([4]))), ref.embedding(w, Int32Array.from([4]), D), { rtol: 0, atol: 1e-7 }, "one token");
    gradcheck({
      label: "embedding",
      ...GRAD_TOL,
      inputs: [w],
      wrt: [0],
      r: ref.randArray(ids.length * D, 2),
      f: ([wt]) => scope(() => arr(embedding(f64(wt!, [V, D]), i32(ids)))),
      analytic: (_, r) => scope(() => [arr(embeddingBackward(f64(r, [ids.length, D]), i32(ids), V))]),
    });
    assert.throws(() => embedding(f32(w, [V, D]), i32([1, 11])), /embedding: id 11 at position 1 is out of range \[0, 11\)/);
    assert.throws(() => embedding(f32(w, [V, D]), tensor([1], [1])), /embedding: ids must be int32, got float32/);
  });
});

test("rmsnorm forward and backward (rows of odd width, one row)", () => {
  scope(() => {
    for (const [R, D] of [[1, 7], [9, 33], [4, 256]] as const) {
      const x = ref.randArray(R * D, R + D, 2), w = ref.randArray(D, D, 1);
      const { y } = rmsnorm(f32(x, [R, D]), f32(w, [D]), 1e-6);
      assertClose(arr(y), ref.rmsnorm(x, w, 1e-6), F32_TOL, `rmsnorm ${R}x${D}`);
    }
    const [R, D] = [3, 6];
    const eps = 1e-5;
    gradcheck({
      label: "rmsnorm",
      ...GRAD_TOL,
      inputs: [ref.randArray(R * D, 3), ref.randArray(D, 4)],
      wrt: [0, 1],
      r: ref.randArray(R * D, 5),
      f: ([x, w]) => scope(() => arr(rmsnorm(f64(x!, [R, D]), f64(w!, [D]), eps).y)),
      analytic: ([x, w], r) =>
        scope(() => {
          const xt = f64(x!, [R, D]), wt = f64(w!, [D]);
          const { rstd } = rmsnorm(xt, wt, eps);
          const { dx, dw } = rmsnormBackward(f64(r, [R, D]), xt, wt, rstd);
          return [arr(dx), arr(dw)];
        }),
    });
    assert.throws(() => rmsnorm(f32(ref.randArray(6, 1), [2, 3]), f32(ref.randArray(4, 1), [4]), 1e-6), /rmsnorm: w must have shape \[3\], got \[4\]/);
  });
});

test("layernorm forward and backward", () => {
  scope(() => {
    for (const [R, D] of [[1, 5], [7, 65]] as const) {
      const x = ref.randArray(R * D, R * D, 3), w = ref.randArray(D, 1), b = ref.randArray(D, 2);
      assertClose(arr(layernorm(f32(x, [R, D]), f32(w, [D]), f32(b, [D]), 1e-5).y), ref.layernorm(x, w, b, 1e-5), F32_TOL, `layernorm ${R}x${D}`);
    }
    const [R, D] = [3, 5];
    gradcheck({
      label: "layernorm",
      ...GRAD_TOL,
      inputs: [ref.randArray(R * D, 6), ref.randArray(D, 7), ref.randArray(D, 8)],
      wrt: [0, 1, 2],
      r: ref.randArray(R * D, 9),
      f: ([x, w, b]) => scope(() => arr(layernorm(f64(x!, [R, D]), f64(w!, [D]), f64(b!, [D]), 1e-5).y)),
      analytic: ([x, w, b], r) =>
        scope(() => {
          const xt = f64(x!, [R, D]), wt = f64(w!, [D]);
          const { mean, rstd } = layernorm(xt, wt, f64(b!, [D]), 1e-5);
          const g = layernormBackward(f64(r, [R, D]), xt, wt, mean, rstd);
          return [arr(g.dx), arr(g.dw), arr(g.db)];
        }),
    });
  });
});

test("swiglu, gelu and softmax: forward against the reference, backward by finite differences", () => {
  scope(() => {
    const n = 37;
    const g = ref.randArray(n, 10, 4), u = ref.randArray(n, 11, 2);
    assertClose(arr(swiglu(f32(g, [n]), f32(u, [n]))), g.map((x, i) => ref.silu(x) * u[i]!), F32_TOL, "swiglu");
    assertClose(arr(gelu(f32(g, [n]))), g.map(ref.geluTanh), F32_TOL, "gelu");
    const [R, N] = [3, 13];
    const s = ref.randArray(R * N, 12, 5);
    assertClose(arr(softmax(f32(s, [R, N]))), ref.softmax(s, N), F32_TOL, "softmax");
    assertClose(arr(softmax(f32(Float64Array.of(1000, 0), [1, 2]))), [1, 0], F32_TOL, "softmax of large logits");

    const m = 12;
    gradcheck({
      label: "swiglu",
      ...GRAD_TOL,
      inputs: [ref.randArray(m, 13, 3), ref.randArray(m, 14)],
      wrt: [0, 1],
      r: ref.randArray(m, 15),
      f: ([a, b]) => scope(() => arr(swiglu(f64(a!, [m]), f64(b!, [m])))),
      analytic: ([a, b], r) =>
        scope(() => {
          const d = swigluBackward(f64(r, [m]), f64(a!, [m]), f64(b!, [m]));
          return [arr(d.dgate), arr(d.dup)];
        }),
    });
    gradcheck({
      label: "gelu",
      ...GRAD_TOL,
      inputs: [ref.randArray(m, 16, 3)],
      wrt: [0],
      r: ref.randArray(m, 17),
      f: ([a]) => scope(() => arr(gelu(f64(a!, [m])))),
      analytic: ([a], r) => scope(() => [arr(geluBackward(f64(r, [m]), f64(a!, [m])))]),
    });
    gradcheck({
      label: "softmax",
      ...GRAD_TOL,
      inputs: [ref.randArray(R * N, 18, 3)],
      wrt: [0],
      r: ref.randArray(R * N, 19),
      f: ([a]) => scope(() => arr(softmax(f64(a!, [R, N])))),
      analytic: ([a], r) => scope(() => [arr(softmaxBackward(f64(r, [R, N]), softmax(f64(a!, [R, N]))))]),
    });
  });
});

test("rope frequencies match transformers' llama3 and yarn formulas", () => {
  const llama = ropeFrequencies(128, {
    theta: 500000,
    scaling: { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
  });
  assertClose(llama.invFreq, ref.llama3InvFreq(128, 500000, 8, 1, 4, 8192), { rtol: 1e-12, atol: 0 }, "llama3");
  assert.equal(llama.attentionScaling, 1);
  // The three llama3 regimes all occur: unscaled high frequencies, divided low ones, smoothed between.
  const plain = ropeFrequencies(128, { theta: 500000 }).invFreq;
  assert.equal(llama.invFreq[0], plain[0]);
  assert.ok(Math.abs(llama.invFreq[63]! - plain[63]! / 8) < 1e-20);
  assert.ok(llama.invFreq.some((f, i) => f < plain[i]! && f > plain[i]! / 8));
  const yarn = ropeFrequencies(64, { theta: 1e6, scaling: { type: "yarn", factor: 4, originalMaxPositionEmbeddings: 32768 } });
  const want = ref.yarnInvFreq(64, 1e6, 4, 32768);
  assertClose(yarn.invFreq, want.invFreq, { rtol: 1e-12, atol: 0 }, "yarn");
  assert.ok(Math.abs(yarn.attentionScaling - want.attentionFactor) < 1e-15);
  assert.ok(Math.abs(yarn.attentionScaling - (0.1 * Math.log(4) + 1)) < 1e-15);
  const lin = ropeFrequencies(8, { theta: 10000, scaling: { type: "linear", factor: 2 } }).invFreq;
  assertClose(lin, [1 / 2, 0.1 / 2, 0.01 / 2, 0.001 / 2], { rtol: 1e-12, atol: 0 }, "linear");
});

test("rope forward matches HF rotate_half and its backward is its transpose", () => {
  scope(() => {
    const cases: [number, number, number, RopeOptions][] = [
      [1, 1, 2, { theta: 10000 }],
      [5, 3, 8, { theta: 10000 }],
      [6, 2, 16, { theta: 1e6, scaling: { type: "yarn", factor: 4, originalMaxPositionEmbeddings: 64 } }],
      [4, 2, 32, { theta: 500000, scaling: { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 32 } }],
    ];
    for (const [T, H, Dh, opts] of cases) {
      const x = ref.randArray(T * H * Dh, T + H + Dh);
      // Positions restart per packed sequence.
      const pos = Int32Array.from({ length: T }, (_, t) => (t < 3 ? t : t - 3 + 100));
      const { invFreq, attentionScaling } = ropeFrequencies(Dh, opts);
      const want = ref.rope(x, pos, H, Dh, invFreq, attentionScaling);
      assertClose(arr(rope(f32(x, [T, H, Dh]), i32(pos), opts)), want, { rtol: 1e-5, atol: 2e-5 }, `rope ${T}x${H}x${Dh}`);
      assertClose(arr(rope(f64(x, [T, H, Dh]), i32(pos), opts)), want, { rtol: 1e-12, atol: 1e-12 }, `rope f64 ${T}x${H}x${Dh}`);
    }
    const [T, H, Dh] = [3, 2, 6];
    const opts: RopeOptions = { theta: 100, scaling: { type: "yarn", factor: 2, originalMaxPositionEmbeddings: 16 } };
    const pos = i32([0, 5, 2]);
    gradcheck({
      label: "rope",
      ...GRAD_TOL,
      inputs: [ref.randArray(T * H * Dh, 20)],
      wrt: [0],
      r: ref.randArray(T * H * Dh, 21),
      f: ([x]) => scope(() => arr(rope(f64(x!, [T, H, Dh]), pos, opts))),
      analytic: (_, r) => scope(() => [arr(ropeBackward(f64(r, [T, H, Dh]), pos, opts))]),
    });
    assert.throws(() => rope(f32(ref.randArray(6, 1), [1, 2, 3]), i32([0]), { theta: 1e4 }), /rope: head dim must be a positive even integer, got 3/);
    assert.throws(() => rope(f32(ref.randArray(8, 1), [2, 1, 4]), i32([0]), { theta: 1e4 }), /rope: positions must have shape \[2\], got \[1\]/);
  });
});

test("rope through a per-batch table equals the direct op: float32 within rounding, float64 exactly, forward and backward", () => {
  scope(() => {
    const cases: [number, number, number, RopeOptions][] = [
      [1, 1, 2, { theta: 10000 }],
      [7, 3, 8, { theta: 10000 }],
      [6, 2, 16, { theta: 1e6, scaling: { type: "yarn", factor: 4, originalMaxPositionEmbeddings: 64 } }],
      [5, 12, 128, { theta: 1e6 }],
      [4, 2, 32, { theta: 500000, scaling: { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 32 } }],
    ];
    for (const [T, H, Dh, opts] of cases) {
      const x = ref.randArray(T * H * Dh, 3 * T + H + Dh);
      // Long positions (angles of ~3e4 rad), restarting per packed sequence.
      const pos = i32(Array.from({ length: T }, (_, t) => (t < 2 ? t : 32000 + 7 * t)));
      const label = `${T}x${H}x${Dh} ${opts.scaling?.type ?? "default"}`;
      const t32 = ropeTable(pos, Dh, opts);
      assert.equal(t32.dtype, "float32");
      assert.deepEqual(t32.shape, [T, 2, Dh / 2]);
      // cos / sin of the same float32 angle, rounded from double rather than from float32 libm.
      const tol = { rtol: 0, atol: 3e-7 };
      assertClose(arr(ropeWithTable(f32(x, [T, H, Dh]), t32)), arr(rope(f32(x, [T, H, Dh]), pos, opts)), tol, `table ${label}`);
      assertClose(arr(ropeBackwardWithTable(f32(x, [T, H, Dh]), t32)), arr(ropeBackward(f32(x, [T, H, Dh]), pos, opts)), tol, `table backward ${label}`);
      const t64 = ropeTable(pos, Dh, opts, "float64");
      assert.deepEqual(arr(ropeWithTable(f64(x, [T, H, Dh]), t64)), arr(rope(f64(x, [T, H, Dh]), pos, opts)), `table f64 ${label}`);
      assert.deepEqual(arr(ropeBackwardWithTable(f64(x, [T, H, Dh]), t64)), arr(ropeBackward(f64(x, [T, H, Dh]), pos, opts)), `table f64 backward ${label}`);
    }
    const pos = i32([0, 1]);
    const t32 = ropeTable(pos, 4, { theta: 1e4 });
    assert.throws(() => ropeWithTable(f64(ref.randArray(8, 1), [2, 1, 4]), t32), /ropeWithTable: table must be float64, got float32/);
    assert.throws(() => ropeWithTable(f32(ref.randArray(12, 1), [2, 1, 6]), t32), /ropeWithTable: table must have shape \[2, 2, 3\], got \[2, 2, 2\]/);
    assert.throws(() => ropeBackwardWithTable(f32(ref.randArray(12, 1), [3, 1, 4]), t32), /ropeBackwardWithTable: table must have shape \[3, 2, 2\]/);
    assert.throws(() => ropeTable(pos, 3, { theta: 1e4 }), /rope: head dim must be a positive even integer, got 3/);
    assert.throws(() => ropeTable(tensor([0, 1], [2]), 4, { theta: 1e4 }), /ropeTable: positions must be int32, got float32/);
  });
});

test("norm parameter gradients over many rows (several reduction chunks) match plain sums", () => {
  scope(() => {
    const [R, D] = [1000, 7];
    const x = ref.randArray(R * D, 40), w = ref.randArray(D, 41), b = ref.randArray(D, 42), dy = ref.randArray(R * D, 43);
    const xt = f64(x, [R, D]), wt = f64(w, [D]);
    const { rstd } = rmsnorm(xt, wt, 1e-6);
    const rs = arr(rstd);
    const wantDw = new Float64Array(D);
    for (let r = 0; r < R; r++) for (let j = 0; j < D; j++) wantDw[j] = wantDw[j]! + dy[r * D + j]! * x[r * D + j]! * rs[r]!;
    assertClose(arr(rmsnormBackward(f64(dy, [R, D]), xt, wt, rstd).dw), wantDw, { rtol: 1e-12, atol: 1e-12 }, "rmsnorm dw");
    const ln = layernorm(xt, wt, f64(b, [D]), 1e-5);
    const mu = arr(ln.mean), lrs = arr(ln.rstd);
    const wantLw = new Float64Array(D), wantLb = new Float64Array(D);
    for (let r = 0; r < R; r++)
      for (let j = 0; j < D; j++) {
        wantLw[j] = wantLw[j]! + dy[r * D + j]! * (x[r * D + j]! - mu[r]!) * lrs[r]!;
        wantLb[j] = wantLb[j]! + dy[r * D + j]!;
      }
    const g = layernormBackward(f64(dy, [R, D]), xt, wt, ln.mean, ln.rstd);
    assertClose(arr(g.dw), wantLw, { rtol: 1e-12, atol: 1e-12 }, "layernorm dw");
    assertClose(arr(g.db), wantLb, { rtol: 1e-12, atol: 1e-12 }, "layernorm db");
  });
});
