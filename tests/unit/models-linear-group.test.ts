import { test } from "node:test";
import assert from "node:assert/strict";
import { Ctx, Init, Linear, LinearGroup, type BatchTensors } from "../../models/index.ts";
import { ops } from "../../models/ops.ts";

// A group of three projections (64 + 32 + 32 rows of 16 fp64 inputs: every part starts on a
// 256-byte boundary, so the gradients share one buffer) against the same Linears run alone.
const batch = {} as BatchTensors;
const close = (got: ArrayLike<number>, want: ArrayLike<number>, what: string, tol = 1e-12) => {
  assert.equal(got.length, want.length, what);
  for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i]! - want[i]!) <= tol * (1 + Math.abs(want[i]!)), `${what} [${i}]: ${got[i]} vs ${want[i]}`);
};
const values = (t: { toArray(): ArrayLike<unknown> } | undefined) => Array.from(t!.toArray() as ArrayLike<number>);

test("LinearGroup: one GEMM a pass gives each part's output columns and gradients, accumulating across backward calls", () => {
  ops.scope(() => {
    const init = new Init(3, 0.5, "float64");
    const parts = [new Linear(init, "q", 16, 64, true), new Linear(init, "k", 16, 32, true), new Linear(init, "v", 16, 32, true)];
    const group = new LinearGroup(parts);
    const x = ops.randn([5, 16], { seed: 11, dtype: "float64" });
    const dy = ops.randn([5, 128], { seed: 12, dtype: "float64" });
    const ctx = new Ctx(batch);
    const y = group.forward(x, ctx.child("g"));
    const ys = ops.splitColumns(y, group.widths);
    const dys = ops.splitColumns(dy, group.widths);
    const want = parts.map((p, i) => {
      const c = new Ctx(batch);
      const yi = p.forward(x, c);
      const dx = p.backward(dys[i]!, c);
      const g = { y: values(yi), dx: values(dx), dw: values(p.weight.grad), db: values(p.bias!.grad) };
      p.weight.zeroGrad();
      p.bias!.zeroGrad();
      return g;
    });
    ys.forEach((yi, i) => close(values(yi), want[i]!.y, `y of part ${i}`));
    const dx = group.backward(dy, ctx.child("g"));
    const dxSum = want.reduce((a, w) => a.map((v, j) => v + w.dx[j]!), new Array<number>(5 * 16).fill(0));
    close(values(dx), dxSum, "dx: the parts' dx summed");
    parts.forEach((p, i) => {
      close(values(p.weight.grad), want[i]!.dw, `dW of part ${i}`);
      close(values(p.bias!.grad), want[i]!.db, `db of part ${i}`);
    });
    // The parts' gradients are adjacent rows of one buffer: q's view read on past its rows is k's.
    assert.deepEqual(values(parts[0]!.weight.grad!.rows(64, 32)), values(parts[1]!.weight.grad), "dW of k follows dW of q in one buffer");
    // A second backward (another micro-batch) adds into the same gradient tensors.
    const held = parts.map((p) => p.weight.grad);
    group.backward(dy, ctx.child("g"));
    parts.forEach((p, i) => {
      assert.equal(p.weight.grad, held[i], `part ${i} keeps its gradient tensor`);
      close(values(p.weight.grad), want[i]!.dw.map((v) => 2 * v), `dW of part ${i} after two backward calls`);
    });
    // Gradients of parts that were not made by the group (one part's zeroed) are added to each part's own.
    parts[1]!.weight.zeroGrad();
    group.backward(dy, ctx.child("g"));
    close(values(parts[1]!.weight.grad), want[1]!.dw, "dW of a part zeroed in between");
    close(values(parts[0]!.weight.grad), want[0]!.dw.map((v) => 3 * v), "dW of a part accumulated three times");
  });
});

test("Tensor.rows: views of adjacent rows share the storage; a range past the storage is an error", () => {
  ops.scope(() => {
    const t = ops.tensor(Float64Array.from({ length: 12 }, (_, i) => i), [4, 3], { dtype: "float64" });
    const mid = t.rows(1, 2);
    assert.deepEqual(mid.shape, [2, 3]);
    assert.deepEqual(values(mid), [3, 4, 5, 6, 7, 8]);
    assert.deepEqual(values(mid.rows(1, 2)), [6, 7, 8, 9, 10, 11], "counted from the view's first row, past its own rows");
    ops.scaleInPlace(mid, 10);
    assert.deepEqual(values(t), [0, 1, 2, 30, 40, 50, 60, 70, 80, 9, 10, 11], "writes through the view");
    assert.throws(() => mid.rows(2, 2), /rows: \[2, 4\) is not a range of whole rows within the tensor's storage/);
    assert.throws(() => t.rows(-1, 1), /rows: \[-1, 0\)/, "not before the tensor's first row");
    // Counts whose byte size would wrap a 64-bit product, and starts past any storage.
    assert.throws(() => t.rows(0, 2 ** 60), /rows: \[0, 1\.15292e\+18\)/);
    assert.throws(() => t.rows(2 ** 62, 1), /rows:/);
    assert.throws(() => t.rows(1e300, 1), /rows:/);
    assert.throws(() => t.rows(0.5, 1), /rows:/);
  });
});

test("LinearGroup over compute copies: they become row views of one buffer, read in place, and are stacked again after set()", () => {
  ops.scope(() => {
    // fp64 masters with fp32 compute copies: mixed precision as bf16 over fp32 on cuda.
    const init = new Init(4, 0.5, "float64");
    const parts = [new Linear(init, "q", 16, 64, false), new Linear(init, "k", 16, 32, false), new Linear(init, "v", 16, 32, false)];
    for (const p of parts) p.weight.place("cpu", "float32");
    const group = new LinearGroup(parts);
    const x = ops.randn([5, 16], { seed: 21, dtype: "float32" });
    const columns = (y: ReturnType<typeof ops.randn>) => ops.splitColumns(y, group.widths).map(values);
    const separate = () => parts.map((p) => values(ops.matmul(x, p.weight.value, { transB: true })));
    const y1 = columns(group.forward(x, new Ctx(batch)));
    separate().forEach((w, i) => close(y1[i]!, w, `part ${i} of the fused output`, 1e-6));
    assert.deepEqual(values(parts[0]!.weight.value.rows(64, 32)), values(parts[1]!.weight.value), "k's copy follows q's in one buffer");
    // An in-place write to a part's copy (the optimizer's) is what the next pass reads.
    const kView = parts[1]!.weight.value;
    ops.scaleInPlace(kView, 2);
    const y2 = columns(group.forward(x, new Ctx(batch)));
    assert.equal(parts[1]!.weight.value, kView, "the view is kept from pass to pass");
    close(y2[1]!, y1[1]!.map((v) => 2 * v), "k's columns after k's copy was doubled in place", 1e-6);
    // A replaced value (loading, a plan's gather) is stacked again.
    parts[0]!.weight.set(ops.tensor(new Float64Array(64 * 16).fill(0.25), [64, 16], { dtype: "float64" }));
    const y3 = columns(group.forward(x, new Ctx(batch)));
    close(y3[0]!, separate()[0]!, "q's columns after set()", 1e-6);
    close(y3[1]!, y2[1]!, "k's columns unchanged by q's set()", 1e-6);
    assert.deepEqual(values(parts[0]!.weight.value.rows(64, 32)), values(parts[1]!.weight.value), "stacked again after set()");
  });
});
