// The CUDA backend against the CPU backend, op by op, on the GPU machine (`npm run test:gpu`).
// Inputs are random and fresh per run (the base seed is in every failure message); bf16 cases
// give both backends the same bf16-rounded values, so the tolerance covers only the kernels'
// arithmetic and the rounding of their outputs. Every allocation is NaN-filled (debug fill),
// so an output element a kernel forgets to write fails the finiteness check.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import {
  type DType,
  type RopeOptions,
  type Tensor,
  CudaEvent,
  add,
  addInto,
  adamwStep,
  adamwStepMany,
  buildInfo,
  cast,
  catColumns,
  catRows,
  copyInto,
  cudaEmptyCache,
  cudaMatmulCounts,
  cudaMemoryStats,
  cudaResetPeak,
  cudaSetDebugFill,
  cudaSynchronize,
  startCudaProfile,
  stopCudaProfile,
  embedding,
  embeddingBackward,
  embeddingBackwardInto,
  globalNorm,
  liveTensors,
  matmul,
  mul,
  prepareAdamWStepMany,
  randn,
  rmsnorm,
  rmsnormBackward,
  rope,
  ropeBackward,
  scale,
  scaleInPlace,
  scope,
  softmax,
  splitColumns,
  splitRows,
  sumSquares,
  sumSquaresOf,
  sumSquaresOfQueued,
  swiglu,
  swigluBackward,
  swigluPacked,
  swigluPackedBackward,
  tensor,
  zeros,
} from "../../native/index.ts";
// The launch-check self test is not part of the public face; tests may reach the raw addon.
import { loadAddon } from "../../native/addon.ts";
import { assertTensorClose } from "./compare.ts";
import { BASE_SEED, nextSeed, pairOf, seeded } from "./pairs.ts";

const F32 = 1e-5;
const BF16 = 1e-2;

before(() => cudaSetDebugFill(true));
after(() => cudaSetDebugFill(false));

const DTYPES: { dtype: "float32" | "bfloat16"; tol: number }[] = [
  { dtype: "float32", tol: F32 },
  { dtype: "bfloat16", tol: BF16 },
];

test("device tensors: creation, copies both ways, views, zeros, liveTensors", () => {
  const start = liveTensors();
  scope(() => {
    const data = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 3);
    const a = tensor(data, [10, 100], { device: "cuda" });
    assert.equal(a.device, "cuda");
    assert.deepEqual(Array.from(a.toFloat64Array()), Array.from(data));
    const b = tensor(data, [1000], { device: "cuda", dtype: "bfloat16" });
    assert.deepEqual(Array.from(b.toFloat64Array()), Array.from(cast(tensor(data, [1000]), "bfloat16").toFloat64Array()), "bf16 rounds as the CPU does");
    const ids = tensor(Int32Array.from([5, -3, 7]), [3], { device: "cuda" });
    assert.deepEqual(Array.from(ids.toFloat64Array()), [5, -3, 7]);
    assert.deepEqual(Array.from(a.to("cpu").toFloat64Array()), Array.from(data));
    assert.deepEqual(Array.from(a.reshape([100, 10]).clone().toFloat64Array()), Array.from(data));
    assert.deepEqual(Array.from(zeros([7], "float32", "cuda").toFloat64Array()), [0, 0, 0, 0, 0, 0, 0]);
    const dst = zeros([1000], "float32", "cuda");
    copyInto(dst, tensor(data, [1000]));
    assert.deepEqual(Array.from(dst.toFloat64Array()), Array.from(data), "host into device");
    const back = zeros([1000]);
    copyInto(back, dst);
    assert.deepEqual(Array.from(back.toFloat64Array()), Array.from(data), "device into host");
    const live = liveTensors();
    // a, b, ids, the reshape view, its clone, zeros([7]), dst
    assert.ok(live.cudaCount >= 7, `cudaCount ${live.cudaCount}`);
    assert.ok(live.cudaBytes >= 4000 + 2000 + 12, `cudaBytes ${live.cudaBytes}`);
  });
  assert.deepEqual(liveTensors(), start, "the scope freed every device tensor");
});

test("row views on cuda: adjacent rows share the storage; a view off a 16-byte boundary is refused", () => {
  scope(() => {
    const t = tensor(Float32Array.from({ length: 32 }, (_, i) => i), [8, 4]).to("cuda");
    const v = t.rows(2, 3);
    assert.deepEqual(Array.from(v.toFloat64Array()), Array.from({ length: 12 }, (_, i) => 8 + i));
    scaleInPlace(v, -1);
    assert.deepEqual(Array.from(t.toFloat64Array()).slice(8, 20), Array.from({ length: 12 }, (_, i) => -(8 + i)), "writes through the view");
    const odd = tensor(Float32Array.from({ length: 12 }, (_, i) => i), [4, 3]).to("cuda");
    assert.throws(() => odd.rows(1, 2), /rows: a cuda view must start 16-byte aligned \(row 1 starts at byte 12\)/);
  });
});

test("cast float32 <-> bfloat16 on cuda is bitwise the CPU's", () => {
  scope(() => {
    const x = randn([4097], { seed: nextSeed(), std: 10 });
    const onGpu = cast(x.to("cuda"), "bfloat16");
    assert.equal(onGpu.dtype, "bfloat16");
    assert.deepEqual(Array.from(onGpu.toFloat64Array()), Array.from(cast(x, "bfloat16").toFloat64Array()));
    assert.deepEqual(Array.from(cast(onGpu, "float32").toFloat64Array()), Array.from(cast(x, "bfloat16").toFloat64Array()));
    assert.throws(() => cast(x.to("cuda"), "float64"), /cast: .*not supported on cuda/);
  });
});

test("elementwise add, mul, scale, scaleInPlace, addInto (fp32 and bf16, mixed addInto)", () => {
  for (const { dtype, tol } of DTYPES) {
    scope(() => {
      const a = pairOf([33, 129], dtype);
      const b = pairOf([33, 129], dtype);
      assertTensorClose(add(a.gpu, b.gpu), add(a.cpu, b.cpu), tol, seeded(`add ${dtype}`));
      assertTensorClose(mul(a.gpu, b.gpu), mul(a.cpu, b.cpu), tol, seeded(`mul ${dtype}`));
      assertTensorClose(scale(a.gpu, -0.37), scale(a.cpu, -0.37), tol, seeded(`scale ${dtype}`));
      const g = a.gpu.clone();
      const c = a.cpu.clone();
      scaleInPlace(g, 1.7);
      scaleInPlace(c, 1.7);
      assertTensorClose(g, c, tol, seeded(`scaleInPlace ${dtype}`));
      addInto(g, b.gpu, 0.5);
      addInto(c, b.cpu, 0.5);
      assertTensorClose(g, c, tol, seeded(`addInto ${dtype}`));
    });
  }
  scope(() => {
    const acc = pairOf([1000], "float32");
    const grad = pairOf([1000], "bfloat16");
    addInto(acc.gpu, grad.gpu, 2);
    addInto(acc.cpu, grad.cpu, 2);
    assertTensorClose(acc.gpu, acc.cpu, F32, seeded("addInto float32 += bfloat16"));
  });
});

test("embedding forward and backward; a bad id is an Error naming the op", () => {
  for (const { dtype, tol } of DTYPES) {
    scope(() => {
      const [V, D, T] = [301, 72, 517];
      const w = pairOf([V, D], dtype);
      const idsHost = tensor(Int32Array.from({ length: T }, () => randomInt(0, V)), [T], { dtype: "int32" });
      const ids = idsHost.to("cuda");
      assertTensorClose(embedding(w.gpu, ids), embedding(w.cpu, idsHost), dtype === "float32" ? 0 : tol, seeded(`embedding ${dtype}`));
      const dy = pairOf([T, D], dtype);
      const dW = embeddingBackward(dy.gpu, ids, V);
      assert.equal(dW.dtype, "float32", "parameter gradients are float32 on cuda");
      assertTensorClose(dW, embeddingBackward(dy.cpu, idsHost, V), F32, seeded(`embeddingBackward ${dtype}`));
      // Into an existing gradient (a tied head's): dW + the scatter, no zero fill.
      const base = pairOf([V, D], "float32");
      embeddingBackwardInto(base.gpu, dy.gpu, ids);
      embeddingBackwardInto(base.cpu, dy.cpu, idsHost);
      assertTensorClose(base.gpu, base.cpu, F32, seeded(`embeddingBackwardInto ${dtype}`));
      // Ids checked on the host: no flag read back, the same results.
      assertTensorClose(embedding(w.gpu, ids, { idsChecked: true }), embedding(w.gpu, ids), 0, seeded(`embedding idsChecked ${dtype}`));
      // (fp32 atomics in a varying order: not bitwise)
      assertTensorClose(embeddingBackward(dy.gpu, ids, V, { idsChecked: true }), dW, F32, seeded(`embeddingBackward idsChecked ${dtype}`));
      const badIds = tensor(Int32Array.from([1, V]), [2], { device: "cuda", dtype: "int32" });
      assert.throws(() => embedding(w.gpu, badIds), /^Error: embedding: an id is out of range/);
      assert.throws(() => embeddingBackward(dy.gpu.reshape([-1, D]).clone(), ids.clone(), 3), /^Error: embeddingBackward: an id is out of range/);
    });
  }
});

test("splitColumns / catColumns / catRows / splitRows are the CPU's copies: q, k, v widths (16-byte units) and odd ones", () => {
  for (const { dtype } of DTYPES) {
    scope(() => {
      for (const widths of [[896, 128, 128], [1536, 256, 256], [5, 3, 1], [7]]) {
        const R = 301;
        const x = pairOf([R, widths.reduce((a, w) => a + w, 0)], dtype);
        const g = splitColumns(x.gpu, widths);
        const c = splitColumns(x.cpu, widths);
        g.forEach((p, i) => assertTensorClose(p, c[i]!, 0, seeded(`splitColumns ${dtype} [${widths}] part ${i}`)));
        assertTensorClose(catColumns(g), x.cpu, 0, seeded(`catColumns ${dtype} [${widths}]`));
        const rows = catRows(g.map((p) => p.reshape([-1]))).reshape([-1]);
        assertTensorClose(rows, catRows(c.map((p) => p.reshape([-1]))), 0, seeded(`catRows ${dtype} [${widths}]`));
        const back = splitRows(rows, g.map((p) => p.numel));
        back.forEach((p, i) => assertTensorClose(p, c[i]!.reshape([-1]), 0, seeded(`splitRows ${dtype} [${widths}] part ${i}`)));
      }
    });
  }
});

test("rmsnorm forward and backward, rows of model and head width", () => {
  for (const { dtype, tol } of DTYPES) {
    for (const shape of [[37, 1536], [129, 7, 64], [3, 5]]) {
      scope(() => {
        const D = shape.at(-1)!;
        const x = pairOf(shape, dtype);
        const w = pairOf([D], dtype);
        const g = rmsnorm(x.gpu, w.gpu, 1e-6);
        const c = rmsnorm(x.cpu, w.cpu, 1e-6);
        assert.equal(g.rstd.dtype, "float32");
        assertTensorClose(g.y, c.y, tol, seeded(`rmsnorm y ${dtype} ${shape}`));
        assertTensorClose(g.rstd, c.rstd, F32, seeded(`rmsnorm rstd ${dtype} ${shape}`));
        const dy = pairOf(shape, dtype);
        const gb = rmsnormBackward(dy.gpu, x.gpu, w.gpu, g.rstd);
        const cb = rmsnormBackward(dy.cpu, x.cpu, w.cpu, c.rstd);
        assertTensorClose(gb.dx, cb.dx, tol, seeded(`rmsnormBackward dx ${dtype} ${shape}`));
        assert.equal(gb.dw.dtype, "float32");
        assertTensorClose(gb.dw, cb.dw, dtype === "float32" ? F32 : 1e-3, seeded(`rmsnormBackward dw ${dtype} ${shape}`));
      });
    }
  }
});

test("swiglu forward and backward (the 16-byte vector path, and the scalar one for odd sizes)", () => {
  for (const { dtype, tol } of DTYPES) {
    for (const shape of [[65, 1000], [7, 13]]) scope(() => {
      const gate = pairOf(shape, dtype, 3);
      const up = pairOf(shape, dtype);
      const dh = pairOf(shape, dtype);
      assertTensorClose(swiglu(gate.gpu, up.gpu), swiglu(gate.cpu, up.cpu), tol, seeded(`swiglu ${dtype}`));
      const g = swigluBackward(dh.gpu, gate.gpu, up.gpu);
      const c = swigluBackward(dh.cpu, gate.cpu, up.cpu);
      assertTensorClose(g.dgate, c.dgate, tol, seeded(`swigluBackward dgate ${dtype}`));
      assertTensorClose(g.dup, c.dup, tol, seeded(`swigluBackward dup ${dtype}`));
    });
  }
});

test("swigluPacked and its backward: each row's gate|up halves, as swiglu of the halves (vector and odd widths)", () => {
  for (const { dtype, tol } of DTYPES) {
    for (const [R, F] of [[65, 1000], [7, 13]] as const) scope(() => {
      const gu = pairOf([R, 2 * F], dtype, 3);
      const dh = pairOf([R, F], dtype);
      const label = `${dtype} [${R}, 2 x ${F}]`;
      assertTensorClose(swigluPacked(gu.gpu), swigluPacked(gu.cpu), tol, seeded(`swigluPacked ${label}`));
      const [g, u] = splitColumns(gu.gpu, [F, F]);
      assertTensorClose(swigluPacked(gu.gpu), swiglu(g!, u!), 0, seeded(`swigluPacked as swiglu of the halves ${label}`));
      assertTensorClose(swigluPackedBackward(dh.gpu, gu.gpu), swigluPackedBackward(dh.cpu, gu.cpu), tol, seeded(`swigluPackedBackward ${label}`));
      const b = swigluBackward(dh.gpu, g!, u!);
      assertTensorClose(swigluPackedBackward(dh.gpu, gu.gpu), catColumns([b.dgate, b.dup]), 0, seeded(`swigluPackedBackward as the halves' ${label}`));
    });
  }
});

test("rope forward and backward, plain and scaled schedules, long positions", () => {
  const schedules: RopeOptions[] = [
    { theta: 1e6 },
    { theta: 5e5, scaling: { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } },
    { theta: 1e4, scaling: { type: "yarn", factor: 4, originalMaxPositionEmbeddings: 4096 } },
  ];
  for (const { dtype, tol } of DTYPES) {
    for (const opts of schedules) {
      for (const Dh of [64, 128]) {
        scope(() => {
          const T = 300;
          const posHost = tensor(Int32Array.from({ length: T }, () => randomInt(0, 32768)), [T], { dtype: "int32" });
          const pos = posHost.to("cuda");
          const x = pairOf([T, 3, Dh], dtype);
          const label = `${dtype} Dh=${Dh} ${opts.scaling?.type ?? "default"}`;
          // Angles reach 3e4 rad: cos/sin of fp32 arguments differ in the last bits between libm and CUDA.
          const ropeTol = dtype === "float32" ? 1e-5 : tol;
          assertTensorClose(rope(x.gpu, pos, opts), rope(x.cpu, posHost, opts), ropeTol, seeded(`rope ${label}`));
          assertTensorClose(ropeBackward(x.gpu, pos, opts), ropeBackward(x.cpu, posHost, opts), ropeTol, seeded(`ropeBackward ${label}`));
        });
      }
    }
  }
});

test("AdamW: fp32 master weights, fp32 or bf16 gradients, bf16 copy written", () => {
  for (const gradDtype of ["float32", "bfloat16"] as const) {
    scope(() => {
      const n = 10_001;
      const p = pairOf([n], "float32", 0.5);
      const m = { cpu: zeros([n]), gpu: zeros([n], "float32", "cuda") };
      const v = { cpu: zeros([n]), gpu: zeros([n], "float32", "cuda") };
      const copy = zeros([n], "bfloat16", "cuda");
      for (let step = 1; step <= 3; step++) {
        const g = pairOf([n], gradDtype, 0.1);
        const o = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step };
        adamwStep(p.gpu, g.gpu, m.gpu, v.gpu, { ...o, bf16Copy: copy });
        adamwStep(p.cpu, g.cpu, m.cpu, v.cpu, o);
      }
      assertTensorClose(p.gpu, p.cpu, F32, seeded(`adamw param (grad ${gradDtype})`));
      assertTensorClose(m.gpu, m.cpu, F32, seeded(`adamw m (grad ${gradDtype})`));
      assertTensorClose(v.gpu, v.cpu, F32, seeded(`adamw v (grad ${gradDtype})`));
      assert.deepEqual(Array.from(copy.toFloat64Array()), Array.from(cast(p.gpu, "bfloat16").toFloat64Array()), "bf16 copy of the updated weights");
    });
  }
});

test("adamwStepMany: many tensors per launch, ragged sizes, per-tensor lr/decay/step, the clipping scale folded in", () => {
  scope(() => {
    // Sizes: empty (left out of the launch: the next launch must still start at the right item),
    // tiny, not a multiple of 4, across several 4096-element chunks, and more tensors than one launch takes (384).
    const sizes = [0, 1, 3, 4, 4097, 12289, ...Array.from({ length: 390 }, (_, i) => 5 + 31 * i)];
    const gradScale = 0.37;
    const items = sizes.map((n, i) => {
      const p = pairOf([n], "float32");
      const g = pairOf([n], "float32", 0.1);
      const m = pairOf([n], "float32", 0.01);
      const v = pairOf([n], "float32", 0.01);
      // Second moments are never negative.
      scaleInPlace(v.gpu, 0);
      scaleInPlace(v.cpu, 0);
      const copy = i % 2 === 0 ? zeros([n], "bfloat16", "cuda") : undefined;
      return { p, g, m, v, copy, lr: 1e-3 * (1 + i / 10), weightDecay: i % 3 === 0 ? 0 : 0.1, step: 1 + (i % 5) };
    });
    adamwStepMany(
      items.map((it) => ({ param: it.p.gpu, grad: it.g.gpu, m: it.m.gpu, v: it.v.gpu, bf16Copy: it.copy, lr: it.lr, weightDecay: it.weightDecay, step: it.step })),
      { beta1: 0.9, beta2: 0.95, eps: 1e-8, gradScale },
    );
    items.forEach((it, i) => {
      // The empty item has nothing to compare; it is there to shift the launch boundaries.
      if (sizes[i] === 0) return;
      scaleInPlace(it.g.cpu, gradScale);
      adamwStep(it.p.cpu, it.g.cpu, it.m.cpu, it.v.cpu, { lr: it.lr, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: it.weightDecay, step: it.step });
      assertTensorClose(it.p.gpu, it.p.cpu, F32, seeded(`adamwStepMany param ${i} (n ${sizes[i]})`));
      assertTensorClose(it.m.gpu, it.m.cpu, F32, seeded(`adamwStepMany m ${i}`));
      assertTensorClose(it.v.gpu, it.v.cpu, F32, seeded(`adamwStepMany v ${i}`));
      if (it.copy) assert.deepEqual(Array.from(it.copy.toFloat64Array()), Array.from(cast(it.p.gpu, "bfloat16").toFloat64Array()), `bf16 copy ${i}`);
    });
    const bad = items[0]!;
    assert.throws(
      () => adamwStepMany([{ param: bad.p.gpu, grad: bad.g.gpu, m: bad.m.gpu, v: items[1]!.v.gpu, lr: 1, weightDecay: 0, step: 1 }], { beta1: 0.9, beta2: 0.95, eps: 1e-8 }),
      /^Error: adamwStepMany: items\[0\]\.param \[0\] and items\[0\]\.v \[1\] differ in shape/,
    );
    // The checks name the faulty item (the sound ones build no message).
    const ok = items[1]!;
    const good = { param: ok.p.gpu, grad: ok.g.gpu, m: ok.m.gpu, v: ok.v.gpu, lr: 1, weightDecay: 0, step: 1 };
    assert.throws(() => adamwStepMany([good, { ...good, step: 1.5 }], { beta1: 0.9, beta2: 0.95, eps: 1e-8 }), /^Error: adamwStepMany: items\[1\]\.step must be an integer >= 1, got 1\.5$/);
    const gone = zeros([1], "float32", "cuda");
    gone.dispose();
    assert.throws(() => adamwStepMany([good, { ...good, m: gone }], { beta1: 0.9, beta2: 0.95, eps: 1e-8 }), /^Error: adamwStepMany: items\[1\]\.m is a disposed tensor$/);
  });
});

test("prepareAdamWStepMany: launched after its tensors' handles are dropped, it equals adamwStepMany; it launches once", () => {
  scope(() => {
    const n = 4099;
    const make = () => ({ p: randn([n], { seed: 5, device: "cuda" }), g: randn([n], { seed: 6, device: "cuda" }), m: zeros([n], "float32", "cuda"), v: zeros([n], "float32", "cuda") });
    const [a, b] = [make(), make()];
    const item = (x: typeof a) => ({ param: x.p, grad: x.g, m: x.m, v: x.v, lr: 1e-2, weightDecay: 0.1, step: 1 });
    const o = { beta1: 0.9, beta2: 0.95, eps: 1e-8 };
    // The prepared step holds the gradient's storage: disposing the tensor before the launch is safe.
    const grad = randn([n], { seed: 6, device: "cuda" });
    const prepared = prepareAdamWStepMany([{ ...item(a), grad }], o);
    grad.dispose();
    randn([n], { seed: 99, device: "cuda" }); // may reuse a freed block: must not be the gradient's
    prepared.launch(0.5);
    adamwStepMany([item(b)], { ...o, gradScale: 0.5 });
    assert.deepEqual(Array.from(a.p.toFloat64Array()), Array.from(b.p.toFloat64Array()));
    assert.throws(() => prepared.launch(0.5), /^Error: adamwStepMany: a prepared step is launched once$/);
    // The binding checks an item's scalars itself (a caller of the raw addon skips the TypeScript checks).
    const handles = [a.p, a.g, a.m, a.v].map((t) => t.handle("test"));
    const prepareRaw = (lr: unknown, wd: unknown, step: unknown) =>
      (loadAddon().cuda!.adamwStepManyPrepare as (items: unknown[], b1: number, b2: number, eps: number) => unknown)([[...handles, null, lr, wd, step]], 0.9, 0.95, 1e-8);
    assert.throws(() => prepareRaw("0.01", 0, 1), /^Error: adamwStepMany: items\[0\]: lr must be a number$/);
    assert.throws(() => prepareRaw(0.01, undefined, 1), /^Error: adamwStepMany: items\[0\]: weight decay must be a number$/);
    assert.throws(() => prepareRaw(0.01, 0, null), /^Error: adamwStepMany: items\[0\]: step must be a number$/);
    // A tensor the step writes, disposed before the launch: refused (its update would be lost), nothing launched.
    const c = make();
    const refused = prepareAdamWStepMany([item(c)], o);
    c.m.dispose();
    assert.throws(() => refused.launch(0.5), /^Error: adamwStepMany: items\[0\]: a tensor it updates was disposed after the step was prepared$/);
    assert.deepEqual(Array.from(c.p.toFloat64Array()), Array.from(randn([n], { seed: 5, device: "cuda" }).toFloat64Array()), "param unchanged");
    // Dropped (a skipped update): the gradient's storage it held goes at once, and it cannot launch.
    const d = make();
    const big = randn([1 << 20], { seed: 7, device: "cuda" });
    const skipped = prepareAdamWStepMany([{ ...item(d), grad: randn([n], { seed: 8, device: "cuda" }) }, { param: zeros([1 << 20], "float32", "cuda"), grad: big, m: zeros([1 << 20], "float32", "cuda"), v: zeros([1 << 20], "float32", "cuda"), lr: 1e-2, weightDecay: 0, step: 1 }], o);
    big.dispose();
    const held = cudaMemoryStats().allocated;
    skipped.drop();
    assert.ok(held - cudaMemoryStats().allocated >= 4 << 20, "the dropped step released the 4 MB gradient it held");
    assert.throws(() => skipped.launch(0.5), /^Error: adamwStepMany: this prepared step was dropped$/);
    assert.deepEqual(Array.from(d.p.toFloat64Array()), Array.from(randn([n], { seed: 5, device: "cuda" }).toFloat64Array()), "param unchanged");
    // The queued sum of squares, read later, against the CPU backend's fp64 sum (another order: 1e-12).
    const pending = sumSquaresOfQueued([a.p, a.m]);
    const want = sumSquaresOf([a.p.to("cpu"), a.m.to("cpu")]);
    assert.ok(Math.abs(pending.read() - want) <= 1e-12 * want, "queued sum of squares against the CPU's");
  });
});

test("matmul (the reference GEMM): every transpose, batched, ragged sizes", () => {
  const before = cudaMatmulCounts();
  let calls = 0;
  for (const { dtype, tol } of DTYPES) {
    for (const [M, K, N] of [[65, 130, 97], [1, 7, 1], [128, 64, 256]] as [number, number, number][]) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          scope(() => {
            const a = pairOf(transA ? [K, M] : [M, K], dtype);
            const b = pairOf(transB ? [N, K] : [K, N], dtype);
            const opts = { transA, transB };
            assertTensorClose(
              matmul(a.gpu, b.gpu, { ...opts, reference: true }),
              matmul(a.cpu, b.cpu, opts),
              tol,
              seeded(`matmul ${dtype} ${M}x${K}x${N} ${transA} ${transB}`),
            );
            calls++;
          });
        }
      }
    }
    scope(() => {
      const a = pairOf([3, 33, 40], dtype);
      const b = pairOf([3, 50, 40], dtype);
      assertTensorClose(
        matmul(a.gpu, b.gpu, { transB: true, reference: true }),
        matmul(a.cpu, b.cpu, { transB: true }),
        tol,
        seeded(`batched matmul ${dtype}`),
      );
      calls++;
    });
  }
  const after = cudaMatmulCounts();
  assert.equal(after.reference - before.reference, calls, "every call ran the reference GEMM");
  assert.equal(after.cublasLt, before.cublasLt, "no call went to cuBLASLt");
});

// cuBLASLt may sum in another order than the CPU (split-K, tensor-core fragments): fp32 gets 1e-4
// of the largest reference value rather than the reference GEMM's 1e-5.
const LT_DTYPES: { dtype: "float32" | "bfloat16"; tol: number }[] = [
  { dtype: "float32", tol: 1e-4 },
  { dtype: "bfloat16", tol: BF16 },
];

test("matmul (the default path: cuBLASLt where built in): every transpose, odd and batched shapes", () => {
  const viaLt = buildInfo().cublasLt;
  const before = cudaMatmulCounts();
  let calls = 0;
  for (const { dtype, tol } of LT_DTYPES) {
    const shapes: [number, number, number, number][] = [
      // [batch, M, K, N]; batch 0 means 2-D
      [0, 37, 61, 129],
      [0, 1, 7, 1],
      [0, 256, 1024, 512],
      [3, 33, 40, 50],
      [4, 37, 129, 61],
    ];
    for (const [B, M, K, N] of shapes) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          scope(() => {
            const lead = B > 0 ? [B] : [];
            const a = pairOf([...lead, ...(transA ? [K, M] : [M, K])], dtype);
            const b = pairOf([...lead, ...(transB ? [N, K] : [K, N])], dtype);
            const opts = { transA, transB };
            assertTensorClose(matmul(a.gpu, b.gpu, opts), matmul(a.cpu, b.cpu, opts), tol, seeded(`matmul ${dtype} ${B}x${M}x${K}x${N} ${transA} ${transB}`));
            calls++;
          });
        }
      }
    }
  }
  const after = cudaMatmulCounts();
  if (viaLt) {
    assert.equal(after.cublasLt - before.cublasLt, calls, "a build with cuBLASLt runs every one of these GEMMs through it");
    assert.equal(after.reference, before.reference, "no fallback to the reference GEMM");
  } else {
    assert.equal(after.reference - before.reference, calls, "without cuBLASLt the reference GEMM runs");
  }
});

test("matmul over more shapes than the plan cache holds (256), then the first ones again: every product right, all through cuBLASLt", () => {
  // 300 distinct shapes (each a new plan: descriptors, an algorithm, a timing), then the first
  // ones again, whose plans the cache's bound has dropped by then (matmul_lt.cc: least recently
  // used first; the test sees results, not the cache); every product against the CPU.
  const K = 24, N = 40;
  const b = pairOf([K, N], "bfloat16");
  const check = (M: number, what: string) =>
    scope(() => {
      const a = pairOf([M, K], "bfloat16");
      assertTensorClose(matmul(a.gpu, b.gpu), matmul(a.cpu, b.cpu), BF16, seeded(`${what} M=${M}`));
    });
  const before = cudaMatmulCounts();
  for (let M = 1; M <= 300; M++) check(M, "new shape");
  for (let M = 1; M <= 8; M++) check(M, "a first shape again");
  const after = cudaMatmulCounts();
  if (buildInfo().cublasLt) assert.equal(after.cublasLt - before.cublasLt, 308, "every one through cuBLASLt, before and after eviction");
});

test("sumSquares and globalNorm match the CPU's float64 sums", () => {
  for (const { dtype } of DTYPES) {
    scope(() => {
      const ts = [pairOf([1], dtype), pairOf([1000, 17], dtype), pairOf([3_000_001], dtype, 0.01)];
      for (const t of ts) {
        const want = sumSquares(t.cpu);
        const got = sumSquares(t.gpu);
        assert.ok(Math.abs(got - want) <= 1e-9 * want, `sumSquares ${dtype}: ${got} vs ${want} [seed ${BASE_SEED}]`);
      }
      const want = globalNorm(ts.map((t) => t.cpu));
      const got = globalNorm(ts.map((t) => t.gpu));
      assert.ok(Math.abs(got - want) <= 1e-9 * want, `globalNorm ${dtype}: ${got} vs ${want}`);
      // A model's worth of tensors: more than one launch's table (768), ragged sizes, empty ones.
      const many = Array.from({ length: 800 }, (_, i) => pairOf([i % 17 === 0 ? 0 : 1 + ((i * 7919) % 20_001)], dtype));
      const wantMany = globalNorm(many.map((t) => t.cpu));
      const gotMany = globalNorm(many.map((t) => t.gpu));
      assert.ok(Math.abs(gotMany - wantMany) <= 1e-9 * wantMany, `globalNorm of 800 tensors ${dtype}: ${gotMany} vs ${wantMany}`);
      assert.equal(globalNorm(many.map((t) => t.gpu)), gotMany, "the same on a second run");
    });
  }
});

test("inputs on different devices, and ops without a cuda kernel, are Errors naming the op", () => {
  scope(() => {
    const a = randn([4, 4], { seed: nextSeed() });
    const b = a.to("cuda");
    assert.throws(() => add(b, a), /^Error: add: b is on cpu but a is on cuda/);
    assert.throws(() => softmax(b), /^Error: softmax: x is on cuda, and softmax has no cuda kernel yet/);
    assert.throws(() => rmsnorm(b, zeros([4]), 1e-6), /^Error: rmsnorm: w is on cpu but x is on cuda/);
  });
});

test("a failed kernel launch surfaces as an Error naming the op and the CUDA error", () => {
  assert.throws(() => loadAddon().cuda!.debugBadLaunch(), /^Error: debugBadLaunch: kernel launch failed: cudaError\w+: /);
  // The error is not sticky: the next op works.
  scope(() => {
    const x = tensor([1, 2, 3], [3], { device: "cuda" });
    assert.deepEqual(Array.from(scale(x, 2).toFloat64Array()), [2, 4, 6]);
  });
});

test("the caching allocator reuses blocks: a loop of the same sizes does not grow reserved or call cudaMalloc", () => {
  const sizes: [number[], DType][] = [[[1024, 1536], "bfloat16"], [[8192], "float32"], [[3, 5], "float32"], [[4_000_000], "float32"]];
  const round = () =>
    scope(() => {
      for (const [shape, dtype] of sizes) zeros(shape, dtype, "cuda");
      const x = tensor(new Float32Array(4096).fill(1), [4096], { device: "cuda" });
      scale(add(x, x), 0.5);
    });
  round();
  cudaSynchronize();
  const warm = cudaMemoryStats();
  for (let i = 0; i < 50; i++) round();
  cudaSynchronize();
  const after = cudaMemoryStats();
  assert.equal(after.reserved, warm.reserved, "reserved grew");
  assert.equal(after.mallocs, warm.mallocs, "cudaMalloc was called in the loop");
  assert.ok(after.peak >= 4_000_000 * 4, `peak ${after.peak}`);
  assert.ok(after.allocated <= after.reserved);
  cudaResetPeak();
  assert.equal(cudaMemoryStats().peak, cudaMemoryStats().allocated);
  const freed = cudaEmptyCache();
  assert.ok(freed > 0, "emptyCache gave back the cached blocks");
  const emptied = cudaMemoryStats();
  assert.equal(emptied.reserved, emptied.allocated, "after emptyCache only blocks in use stay reserved");
});

test("events order the communication stream after compute", () => {
  scope(() => {
    const x = randn([1 << 20], { seed: nextSeed(), device: "cuda" });
    scaleInPlace(x, 2);
    const done = CudaEvent.record("compute");
    done.waitOn("comm");
    CudaEvent.record("comm").synchronize();
    done.synchronize();
    assert.ok(Number.isFinite(sumSquares(x)));
  });
});

test("uploads through the pinned slots keep their data when many are queued before any is read", () => {
  scope(() => {
    // 20 uploads cycle the 8 slots twice over while the device is kept busy; each must hold its own data.
    const big = randn([2048, 2048], { seed: nextSeed(), device: "cuda" });
    const sent: Int32Array[] = [];
    const got: Tensor[] = [];
    for (let i = 0; i < 20; i++) {
      matmul(big, big);
      const a = Int32Array.from({ length: 8192 + i }, (_, j) => (j * 7919 + i) | 0);
      sent.push(a);
      got.push(tensor(a, [a.length], { dtype: "int32", device: "cuda" }));
    }
    got.forEach((t, i) => assert.deepEqual(t.toArray(), sent[i], `upload ${i}`));
    // Larger than a slot: staged in pageable memory instead.
    const large = Float32Array.from({ length: 1 << 19 }, (_, j) => j * 0.5);
    assert.deepEqual(tensor(large, [large.length], { device: "cuda" }).toArray(), large);
  });
});

test("a profile times the fills, copies and uploads as well as the kernels; host-only calls stay out of it", () => {
  scope(() => {
    const host = randn([1024, 256], { seed: nextSeed() });
    startCudaProfile();
    const a = host.to("cuda");
    const b = zeros([1024, 256], "float32", "cuda");
    copyInto(b, a);
    const c = b.clone();
    const d = tensor(Int32Array.from([1, 2, 3]), [3], { dtype: "int32", device: "cuda" });
    scaleInPlace(c, 2);
    const back = c.to("cpu");
    zeros([4], "float32", "cpu").clone();
    const byOp = stopCudaProfile();
    for (const op of ["to", "zeros", "copyInto", "clone", "tensor", "scaleInPlace"]) {
      const t = byOp.get(op);
      assert.ok(t && Number.isFinite(t.ms) && t.ms >= 0, `${op} is in the profile`);
    }
    assert.equal(byOp.get("to")!.calls, 2, "both directions of to()");
    assert.equal(byOp.get("zeros")!.calls, 1, "the host zeros is not timed");
    assert.equal(byOp.get("clone")!.calls, 1, "the host clone is not timed");
    assert.deepEqual(Array.from(back.toArray() as Float32Array).slice(0, 4), Array.from(host.toArray() as Float32Array).slice(0, 4).map((v) => 2 * v));
    assert.deepEqual(d.toArray(), Int32Array.from([1, 2, 3]));
  });
});
