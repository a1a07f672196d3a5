import { test } from "node:test";
import assert from "node:assert/strict";
import { tensor, scope, attention, attentionBackward, liveTensors, type AttentionOptions } from "../../native/index.ts";
import * as ref from "./reference/ops.ts";
import { assertClose, gradcheck } from "./reference/gradcheck.ts";

const f32 = (a: Float64Array, shape: number[]) => tensor(Float32Array.from(a), shape);
const f64 = (a: Float64Array, shape: number[]) => tensor(a, shape, { dtype: "float64" });
const i32 = (a: ArrayLike<number>) => tensor(Int32Array.from(a), [a.length], { dtype: "int32" });
const arr = (t: { toArray(): ArrayLike<unknown> }) => Float64Array.from(t.toArray() as ArrayLike<number>);

interface Case {
  cu: number[];
  Hq: number;
  Hkv: number;
  Dh: number;
  opts: AttentionOptions;
}

// Lengths cross the kernel's query (32) and key (64) blocks; many length-1 sequences; GQA, MQA, MHA.
const cases: Case[] = [
  { cu: [0, 1], Hq: 1, Hkv: 1, Dh: 4, opts: { causal: true } },
  { cu: [0, 1, 2, 3, 4, 9, 10], Hq: 4, Hkv: 2, Dh: 8, opts: { causal: true } },
  { cu: [0, 100], Hq: 2, Hkv: 1, Dh: 5, opts: { causal: true } },
  { cu: [0, 70, 71, 150], Hq: 3, Hkv: 3, Dh: 16, opts: { causal: true, window: 40 } },
  { cu: [0, 33, 33, 40], Hq: 2, Hkv: 2, Dh: 3, opts: { causal: false } },
  { cu: [0, 20, 97], Hq: 4, Hkv: 1, Dh: 6, opts: { causal: true, window: 1, scale: 0.3 } },
];

test("attention forward and backward agree with naive softmax(QK^T)V per sequence (float32: rtol 2e-5, atol 2e-5)", () => {
  const start = liveTensors();
  scope(() => {
    cases.forEach(({ cu, Hq, Hkv, Dh, opts }, n) => {
      const T = cu.at(-1)!;
      const q = ref.randArray(T * Hq * Dh, 10 * n + 1, 1.5), k = ref.randArray(T * Hkv * Dh, 10 * n + 2, 1.5);
      const v = ref.randArray(T * Hkv * Dh, 10 * n + 3), dout = ref.randArray(T * Hq * Dh, 10 * n + 4);
      const scale = opts.scale ?? 1 / Math.sqrt(Dh);
      const want = ref.attention(q, k, v, Int32Array.from(cu), T, Hq, Hkv, Dh, opts.causal, opts.window ?? 0, scale);
      const tq = f32(q, [T, Hq, Dh]), tk = f32(k, [T, Hkv, Dh]), tv = f32(v, [T, Hkv, Dh]), tcu = i32(cu);
      const { o, lse } = attention(tq, tk, tv, tcu, opts);
      const tol = { rtol: 2e-5, atol: 2e-5 };
      const label = `case ${n} (cu ${cu.join(",")})`;
      assertClose(arr(o), want.o, tol, `o ${label}`);
      assertClose(arr(lse), want.lse, tol, `lse ${label}`);
      const g = attentionBackward(f32(dout, [T, Hq, Dh]), tq, tk, tv, o, lse, tcu, opts);
      const wantG = ref.attentionBackward(dout, q, k, v, Int32Array.from(cu), T, Hq, Hkv, Dh, opts.causal, opts.window ?? 0, scale);
      const gtol = { rtol: 1e-4, atol: 1e-4 };
      assertClose(arr(g.dq), wantG.dq, gtol, `dq ${label}`);
      assertClose(arr(g.dk), wantG.dk, gtol, `dk ${label}`);
      assertClose(arr(g.dv), wantG.dv, gtol, `dv ${label}`);
    });
  });
  assert.deepEqual(liveTensors(), start);
});

test("attention backward passes a float64 finite-difference check (rtol 1e-6)", () => {
  const checks: Case[] = [
    { cu: [0, 1, 4, 5, 9], Hq: 4, Hkv: 2, Dh: 3, opts: { causal: true } },
    { cu: [0, 3, 7], Hq: 2, Hkv: 1, Dh: 2, opts: { causal: true, window: 2 } },
    { cu: [0, 70], Hq: 1, Hkv: 1, Dh: 2, opts: { causal: true, window: 40 } },
    { cu: [0, 2, 6], Hq: 2, Hkv: 2, Dh: 2, opts: { causal: false } },
  ];
  checks.forEach(({ cu, Hq, Hkv, Dh, opts }, n) => {
    const T = cu.at(-1)!;
    const cuT = i32(cu);
    const run = (q: Float64Array, k: Float64Array, v: Float64Array) =>
      attention(f64(q, [T, Hq, Dh]), f64(k, [T, Hkv, Dh]), f64(v, [T, Hkv, Dh]), cuT, opts);
    gradcheck({
      label: `attention ${n}`,
      rtol: 1e-6,
      atol: 1e-8,
      inputs: [ref.randArray(T * Hq * Dh, n + 1), ref.randArray(T * Hkv * Dh, n + 2), ref.randArray(T * Hkv * Dh, n + 3)],
      wrt: [0, 1, 2],
      r: ref.randArray(T * Hq * Dh, n + 4),
      f: ([q, k, v]) => scope(() => arr(run(q!, k!, v!).o)),
      analytic: ([q, k, v], r) =>
        scope(() => {
          const { o, lse } = run(q!, k!, v!);
          const g = attentionBackward(f64(r, [T, Hq, Dh]), f64(q!, [T, Hq, Dh]), f64(k!, [T, Hkv, Dh]), f64(v!, [T, Hkv, Dh]), o, lse, cuT, opts);
          return [arr(g.dq), arr(g.dk), arr(g.dv)];
        }),
    });
    cuT.dispose();
  });
});

test("attention rejects bad cu_seqlens, head counts and options with named errors", () => {
  scope(() => {
    const q = f32(ref.randArray(4 * 2 * 2, 1), [4, 2, 2]);
    const k = f32(ref.randArray(4 * 2, 2), [4, 1, 2]);
    const k3 = f32(ref.randArray(4 * 3 * 2, 2), [4, 3, 2]);
    assert.throws(() => attention(q, k, k, i32([0, 3]), { causal: true }), /attention: cu_seqlens must end at T=4, got 3/);
    assert.throws(() => attention(q, k, k, i32([1, 4]), { causal: true }), /attention: cu_seqlens must start at 0/);
    assert.throws(() => attention(q, k, k, i32([0, 3, 2, 4]), { causal: true }), /attention: cu_seqlens must be non-decreasing/);
    assert.throws(() => attention(q, k, k, i32([0]), { causal: true }), /attention: cuSeqlens must hold B\+1 >= 2 offsets/);
    assert.throws(() => attention(q, k3, k3, i32([0, 4]), { causal: true }), /attention: query heads \(2\) must be a multiple of kv heads \(3\)/);
    assert.throws(() => attention(q, k, k, i32([0, 4]), { causal: false, window: 2 }), /attention: a sliding window needs causal attention/);
    assert.throws(() => attention(q, k, k, tensor([0, 4], [2]), { causal: true }), /attention: cuSeqlens must be int32, got float32/);
  });
});
