import { test } from "node:test";
import assert from "node:assert/strict";
import { tensor, scope, splitColumns, catColumns, catRows, splitRows } from "../../native/index.ts";

// Index-valued data, so a copy from the wrong row or column shows as a wrong value.
const seq = (n: number, base: number) => Float64Array.from({ length: n }, (_, i) => base + i);
const values = (t: { toArray(): ArrayLike<unknown> }) => Array.from(t.toArray() as ArrayLike<number>);

test("splitColumns takes each part's columns of every row, and catColumns puts them back", () => {
  scope(() => {
    for (const dtype of ["float32", "float64", "int32"] as const) {
      for (const widths of [[3, 1, 2], [4], [0, 5, 2], [2, 2, 2, 2, 2, 2, 2, 2]]) {
        const R = 4;
        const W = widths.reduce((a, w) => a + w, 0);
        const data = seq(R * W, 1);
        const x = tensor(dtype === "int32" ? Int32Array.from(data) : data, [R, W], { dtype });
        const parts = splitColumns(x, widths);
        let c0 = 0;
        parts.forEach((p, i) => {
          const w = widths[i]!;
          assert.deepEqual(p.shape, [R, w]);
          assert.equal(p.dtype, dtype);
          const want: number[] = [];
          for (let r = 0; r < R; r++) for (let c = 0; c < w; c++) want.push(data[r * W + c0 + c]!);
          assert.deepEqual(values(p), want, `${dtype} [${widths}] part ${i}`);
          c0 += w;
        });
        const back = catColumns(parts);
        assert.deepEqual(back.shape, [R, W]);
        assert.deepEqual(values(back), values(x), `${dtype} [${widths}] round trip`);
      }
    }
  });
});

test("catRows stacks tensors along dim 0 and splitRows undoes it; mismatches are errors naming the op", () => {
  scope(() => {
    const a = tensor(seq(6, 1), [2, 3]);
    const b = tensor(seq(3, 100), [1, 3]);
    const c = tensor(seq(9, 200), [3, 3]);
    const s = catRows([a, b, c]);
    assert.deepEqual(s.shape, [6, 3]);
    assert.deepEqual(values(s), [...values(a), ...values(b), ...values(c)]);
    const [a2, b2, c2] = splitRows(s, [2, 1, 3]);
    assert.deepEqual([a2!.shape, b2!.shape, c2!.shape], [[2, 3], [1, 3], [3, 3]]);
    assert.deepEqual([values(a2!), values(b2!), values(c2!)], [values(a), values(b), values(c)]);
    const bias = catRows([tensor(seq(2, 1), [2]), tensor(seq(3, 5), [3])]);
    assert.deepEqual(values(bias), [1, 2, 5, 6, 7]);

    assert.throws(() => catRows([a, tensor(seq(4, 0), [1, 4])]), /catRows: parts\[1\] \[1, 4\] does not match/);
    assert.throws(() => splitRows(s, [2, 2]), /splitRows: rows \[2, 2\] add up to 4, not x's 6/);
    assert.throws(() => splitColumns(a, [1, 1]), /splitColumns: widths \[1, 1\] add up to 2, not x's 3 columns/);
    assert.throws(() => catColumns([a, c]), /catColumns: parts\[1\] has 3 rows, parts\[0\] 2/);
    assert.throws(() => catColumns([a, tensor(Int32Array.from([1, 2]), [2, 1], { dtype: "int32" })]), /catColumns: parts\[1\] is int32/);
    assert.throws(() => splitColumns(a, Array.from({ length: 9 }, () => 0).concat([3])), /1 to 8 parts, got 10/);
    // catRows and splitRows name themselves, not the column ops they run on.
    assert.throws(() => catRows([a, tensor(Int32Array.from([1, 2, 3]), [1, 3], { dtype: "int32" })]), /catRows: parts\[1\] is int32/);
    assert.throws(() => catRows(Array.from({ length: 9 }, () => a)), /catRows: 1 to 8 parts, got 9/);
    assert.throws(() => splitRows(s, [1, 1, 1, 1, 1, 1, 0, 0, 0]), /splitRows: 1 to 8 parts, got 9/);
  });
});
