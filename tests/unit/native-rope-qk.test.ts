import { test } from "node:test";
import assert from "node:assert/strict";
import {
  tensor, scope, cast, catColumns, sumRows, ropeTable, ropeWithTable, ropeBackwardWithTable, ropeQKWithTable, ropeQKBackwardWithTable, ropeQKVSplit,
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
        const { dqkv, columnSums } = ropeQKVBackwardCat(q, k, v, table, { columnSums: true });
        // The way back is the transpose: a rotation's inverse, so the columns come back.
        const back = arr(dqkv);
        for (let i = 0; i < x.length; i++) assert.ok(Math.abs(back[i]! - x[i]!) <= (dtype === "float32" ? 1e-5 : 1e-12), `x[${i}] ${label}`);
        const b = ropeQKBackwardWithTable(q, k, table);
        const cat = catColumns([b.q.reshape([T, Hq * Dh]), b.k.reshape([T, Hk * Dh]), v.reshape([T, Hk * Dh])]);
        assert.deepEqual(back, arr(cat), `as ropeQKBackwardWithTable + catColumns ${label}`);
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
    assert.deepEqual(arr(narrow.dqkv), arr(cast(wide.dqkv, "bfloat16")));
    assert.deepEqual(arr(narrow.columnSums!), arr(sumRows(cast(narrow.dqkv, "float32"))));
    const d64 = f64(ref.randArray(T * Hq * Dh, 4), [T, Hq, Dh]);
    assert.throws(
      () => ropeQKVBackwardCat(d64, f64(ref.randArray(T * Dh, 5), [T, Hk, Dh]), f64(ref.randArray(T * Dh, 6), [T, Hk, Dh]), ropeTable(i32([0, 1, 2, 3]), Dh, { theta: 1e4 }, "float64"), { dtype: "bfloat16" }),
      /ropeQKVBackwardCat: float64 gradients cannot give a bfloat16 dqkv/,
    );
  });
});
