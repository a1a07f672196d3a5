import { test } from "node:test";
import assert from "node:assert/strict";
import { tensor, scope, ropeTable, ropeWithTable, ropeBackwardWithTable, ropeQKWithTable, ropeQKBackwardWithTable } from "../../native/index.ts";
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
