import { test } from "node:test";
import assert from "node:assert/strict";
import { tensor, scope, linearCrossEntropy, linearCrossEntropyLoss, liveTensors } from "../../native/index.ts";
import * as ref from "./reference/ops.ts";
import { assertClose, gradcheck } from "./reference/gradcheck.ts";

const f32 = (a: Float64Array, shape: number[]) => tensor(Float32Array.from(a), shape);
const f64 = (a: Float64Array, shape: number[]) => tensor(a, shape, { dtype: "float64" });
const i32 = (a: ArrayLike<number>) => tensor(Int32Array.from(a), [a.length], { dtype: "int32" });
const arr = (t: { toArray(): ArrayLike<unknown> }) => Float64Array.from(t.toArray() as ArrayLike<number>);

test("linear cross-entropy matches full logits in the reference, for any chunk size (float32 rtol 1e-5)", () => {
  const start = liveTensors();
  scope(() => {
    const cases: [number, number, number, number[]][] = [
      [1, 4, 3, [2]],
      [9, 17, 31, [0, 30, -100, 5, 5, -100, 1, 2, 3]],
      [40, 8, 300, Array.from({ length: 40 }, (_, i) => (i % 7 === 0 ? -100 : (i * 37) % 300))],
    ];
    for (const [T, D, V, labels] of cases) {
      const x = ref.randArray(T * D, T + D, 2), w = ref.randArray(V * D, V, 1);
      const gradScale = 1 / 7;
      const want = ref.linearCrossEntropy(x, w, Int32Array.from(labels), T, D, V, -100, gradScale);
      for (const chunkSize of [1, 4, 1000]) {
        const got = linearCrossEntropy(f32(x, [T, D]), f32(w, [V, D]), i32(labels), { chunkSize, gradScale });
        const label = `T=${T} V=${V} chunk=${chunkSize}`;
        assert.equal(got.count, want.count, label);
        assert.ok(Math.abs(got.loss - want.loss) <= 1e-5 * Math.abs(want.loss) + 1e-5, `${label}: loss ${got.loss} vs ${want.loss}`);
        assertClose(arr(got.dx), want.dx, { rtol: 1e-5, atol: 1e-6 }, `dx ${label}`);
        assertClose(arr(got.dw), want.dw, { rtol: 1e-5, atol: 1e-6 }, `dw ${label}`);
      }
      const evalOnly = linearCrossEntropyLoss(f32(x, [T, D]), f32(w, [V, D]), i32(labels));
      assert.ok(Math.abs(evalOnly.loss - want.loss) <= 1e-5 * Math.abs(want.loss) + 1e-5);
      assert.equal(evalOnly.count, want.count);
    }
    const allIgnored = linearCrossEntropy(f32(ref.randArray(6, 1), [2, 3]), f32(ref.randArray(12, 2), [4, 3]), i32([-100, -100]));
    assert.equal(allIgnored.loss, 0);
    assert.equal(allIgnored.count, 0);
    assert.ok(arr(allIgnored.dw).every((g) => g === 0));
  });
  assert.deepEqual(liveTensors(), start);
});

test("linear cross-entropy gradients pass a float64 finite-difference check (rtol 1e-6)", () => {
  const [T, D, V] = [5, 3, 7];
  const labels = i32([6, -100, 0, 3, 3]);
  const lossOf = (x: Float64Array, w: Float64Array) => scope(() => linearCrossEntropyLoss(f64(x, [T, D]), f64(w, [V, D]), labels, { chunkSize: 2 }).loss);
  gradcheck({
    label: "linearCrossEntropy",
    rtol: 1e-6,
    atol: 1e-8,
    inputs: [ref.randArray(T * D, 1, 2), ref.randArray(V * D, 2, 2)],
    wrt: [0, 1],
    r: Float64Array.of(0.25),
    f: ([x, w]) => Float64Array.of(lossOf(x!, w!)),
    analytic: ([x, w]) =>
      scope(() => {
        const g = linearCrossEntropy(f64(x!, [T, D]), f64(w!, [V, D]), labels, { chunkSize: 2, gradScale: 0.25 });
        return [arr(g.dx), arr(g.dw)];
      }),
  });
  labels.dispose();
});

test("linear cross-entropy rejects bad labels and shapes with named errors", () => {
  scope(() => {
    const x = f32(ref.randArray(6, 1), [2, 3]);
    const w = f32(ref.randArray(12, 2), [4, 3]);
    assert.throws(() => linearCrossEntropy(x, w, i32([1, 4])), /linearCrossEntropy: label 4 at position 1 is outside \[0, 4\) and not the ignore index/);
    assert.throws(() => linearCrossEntropy(x, w, i32([1])), /linearCrossEntropy: labels must have shape \[2\], got \[1\]/);
    assert.throws(() => linearCrossEntropy(x, f32(ref.randArray(8, 2), [4, 2]), i32([1, 1])), /linearCrossEntropy: w must have shape \[\*, 3\], got \[4, 2\]/);
    assert.throws(() => linearCrossEntropy(x, w, i32([1, 1]), { chunkSize: 0 }), /linearCrossEntropy: chunkSize must be a positive integer/);
  });
});
