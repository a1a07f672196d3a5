import { test } from "node:test";
import assert from "node:assert/strict";
import {
  tensor, scope, ropeTable, ropeWithTable, ropeBackwardWithTable, ropeQKWithTable, ropeQKBackwardWithTable, ropeQKVSplit,
  ropeQKVBackwardCat,
} from "../../native/index.ts";
import * as ref from "./reference/ops.ts";

const f32 = (a: Float64Array, shape: number[]) => tensor(Float32Array.from(a), shape);
const f64 = (a: Float64Array, shape: number[]) => tensor(a, shape, { dtype: "float64" });
const i32 = (a: ArrayLike<number>) => tensor(Int32Array.from(a), [a.length], { dtype: "int32" });
const arr = (t: { toArray(): ArrayLike<unknown> }) => Float64Array.from(t.toArray() as ArrayLike<number>);

test("ropeQKWithTable and its backward equal ropeWithTable of q and of k, float32 and float64", () => {
  scope(() => {
    // [T, Hq, Hk, Dh]: GQA (12 / 2 heads of 128), one head each, and odd half widths.
    const cases: [number, number, number, number][] = [
      [5, 12, 2, 128],
      [3, 1, 1, 2],
      [7, 3, 1, 10],
    ];
    for (const [T, Hq, Hk, Dh] of cases) {
      const pos = i32(Array.from({ length: T }, (_, t) => (t < 2 ? t : 32000 + 7 * t)));
      const q = ref.randArray(T * Hq * Dh, T + Hq);
      const k = ref.randArray(T * Hk * Dh, T + Hk + 100);
      for (const [name, make, dtype] of [["f32", f32, "float32"], ["f64", f64, "float64"]] as const) {
        const table = ropeTable(pos, Dh, { theta: 1e6 }, dtype);
        const label = `${T}x${Hq}/${Hk}x${Dh} ${name}`;
        const fwd = ropeQKWithTable(make(q, [T, Hq, Dh]), make(k, [T, Hk, Dh]), table);
        assert.deepEqual(arr(fwd.q), arr(ropeWithTable(make(q, [T, Hq, Dh]), table)), `q ${label}`);
        assert.deepEqual(arr(fwd.k), arr(ropeWithTable(make(k, [T, Hk, Dh]), table)), `k ${label}`);
        assert.deepEqual(fwd.k.shape, [T, Hk, Dh]);
        const bwd = ropeQKBackwardWithTable(make(q, [T, Hq, Dh]), make(k, [T, Hk, Dh]), table);
        assert.deepEqual(arr(bwd.q), arr(ropeBackwardWithTable(make(q, [T, Hq, Dh]), table)), `dq ${label}`);
        assert.deepEqual(arr(bwd.k), arr(ropeBackwardWithTable(make(k, [T, Hk, Dh]), table)), `dk ${label}`);
      }
    }
  });
});

test("ropeQKWithTable refuses mismatched q, k and table", () => {
  scope(() => {
    const table = ropeTable(i32([0, 1]), 4, { theta: 1e4 });
    const q = f32(ref.randArray(16, 1), [2, 2, 4]);
    assert.throws(() => ropeQKWithTable(q, f64(ref.randArray(8, 2), [2, 1, 4]), table), /ropeQKWithTable: table must be float64, got float32/);
    assert.throws(() => ropeQKWithTable(q, f32(ref.randArray(12, 2), [3, 1, 4]), table), /ropeQKWithTable: table must have shape \[3, 2, 2\]/);
    assert.throws(() => ropeQKBackwardWithTable(q, f32(ref.randArray(12, 2), [2, 1, 6]), table), /ropeQKBackwardWithTable: table must have shape \[2, 2, 3\]/);
    assert.throws(() => ropeQKWithTable(q, f32(ref.randArray(8, 2), [2, 4]), table), /ropeQKWithTable: k must be 3-D/);
  });
});

/** x rounded to bfloat16, to nearest even (what cast does), by its float32 bits. */
function bf16Round(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  u[0] = ((u[0]! + 0x7fff + ((u[0]! >>> 16) & 1)) >>> 16) << 16;
  return f[0]!;
}

test("ropeQKVSplit / ropeQKVBackwardCat: a fused projection's columns rotated into heads and back, with the column sums", () => {
  scope(() => {
    for (const [T, Hq, Hk, Dh] of [[5, 12, 2, 128], [7, 3, 1, 10]] as const) {
      const pos = i32(Array.from({ length: T }, (_, t) => 3 * t + 1));
      const W = (Hq + 2 * Hk) * Dh;
      const x = ref.randArray(T * W, T + W);
      for (const [name, make, dtype] of [["f32", f32, "float32"], ["f64", f64, "float64"]] as const) {
        const label = `${T}x${Hq}/${Hk}x${Dh} ${name}`;
        const table = ropeTable(pos, Dh, { theta: 1e6 }, dtype);
        const qkv = make(x, [T, W]);
        const { q, k, v } = ropeQKVSplit(qkv, table, Hq, Hk);
        assert.deepEqual([q.shape, k.shape, v.shape], [[T, Hq, Dh], [T, Hk, Dh], [T, Hk, Dh]]);
        // Against the reference rope (float64, HF's rotate_half) of each column range; v as it is.
        const tol = dtype === "float32" ? 1e-5 : 1e-12;
        const invFreq = Array.from({ length: Dh / 2 }, (_, i) => 1e6 ** (-(2 * i) / Dh));
        const positions = Int32Array.from(pos.toArray() as Int32Array);
        const columns = (from: number, width: number) => Float64Array.from({ length: T * width }, (_, j) => x[Math.floor(j / width) * W + from + (j % width)]!);
        const parts: [string, Float64Array, Float64Array][] = [
          ["q", arr(q), ref.rope(columns(0, Hq * Dh), positions, Hq, Dh, invFreq)],
          ["k", arr(k), ref.rope(columns(Hq * Dh, Hk * Dh), positions, Hk, Dh, invFreq)],
          ["v", arr(v), columns((Hq + Hk) * Dh, Hk * Dh)],
        ];
        for (const [part, got, want] of parts) {
          for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i]! - want[i]!) <= tol * (1 + Math.abs(want[i]!)), `${part}[${i}] ${label}`);
        }
        const { dqkv, columnSums } = ropeQKVBackwardCat(q, k, v, table, { columnSums: true });
        // The way back is the transpose: a rotation's inverse, so the columns come back.
        const back = arr(dqkv);
        for (let i = 0; i < x.length; i++) assert.ok(Math.abs(back[i]! - x[i]!) <= tol, `x[${i}] ${label}`);
        // Column sums against a float64 sum of the same values.
        const want = new Float64Array(W);
        for (let t = 0; t < T; t++) for (let c = 0; c < W; c++) want[c] = want[c]! + back[t * W + c]!;
        const got = arr(columnSums!);
        for (let c = 0; c < W; c++) assert.ok(Math.abs(got[c]! - want[c]!) <= 1e-5 * (1 + Math.abs(want[c]!)), `column ${c} ${label}`);
        assert.equal(ropeQKVBackwardCat(q, k, v, table).columnSums, undefined);
      }
    }
  });
});

test("ropeQKVBackwardCat: float32 gradients into a bfloat16 dqkv, whose stored values are summed; other dtypes refused", () => {
  scope(() => {
    const T = 4, Hq = 2, Hk = 1, Dh = 4;
    const table = ropeTable(i32([0, 1, 2, 3]), Dh, { theta: 1e4 });
    const g = (H: number, seed: number) => f32(ref.randArray(T * H * Dh, seed), [T, H, Dh]);
    const [dq, dk, dv] = [g(Hq, 1), g(Hk, 2), g(Hk, 3)];
    const wide = ropeQKVBackwardCat(dq, dk, dv, table);
    const narrow = ropeQKVBackwardCat(dq, dk, dv, table, { dtype: "bfloat16", columnSums: true });
    assert.equal(narrow.dqkv.dtype, "bfloat16");
    // The float32 result rounded once to bfloat16 (nearest even, on the host), and the column sums of those stored values.
    const rounded = Float64Array.from(arr(wide.dqkv), bf16Round);
    assert.deepEqual(arr(narrow.dqkv), rounded);
    const W = (Hq + 2 * Hk) * Dh;
    const sums = Float64Array.from({ length: W }, (_, c) => Array.from({ length: T }, (_, t) => rounded[t * W + c]!).reduce((a, b) => a + b, 0));
    const got = arr(narrow.columnSums!);
    for (let c = 0; c < W; c++) assert.ok(Math.abs(got[c]! - sums[c]!) <= 1e-6 * (1 + Math.abs(sums[c]!)), `column ${c}`);
    const d64 = f64(ref.randArray(T * Hq * Dh, 4), [T, Hq, Dh]);
    assert.throws(
      () => ropeQKVBackwardCat(d64, f64(ref.randArray(T * Dh, 5), [T, Hk, Dh]), f64(ref.randArray(T * Dh, 6), [T, Hk, Dh]), ropeTable(i32([0, 1, 2, 3]), Dh, { theta: 1e4 }, "float64"), { dtype: "bfloat16" }),
      /ropeQKVBackwardCat: float64 gradients cannot give a bfloat16 dqkv/,
    );
  });
});
