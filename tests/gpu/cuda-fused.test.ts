// The fused and reworked CUDA kernels against the CPU backend (`npm run test:gpu`): the linear
// cross-entropy, GEMMs into a given output (accumulate, fp32 out of bf16 in) and with a bias,
// addBias / sumRows, and the vectorised RMSNorm (with the fused residual), RoPE (direct and through
// its per-batch table) and embedding at the shapes their vector and fallback paths meet. Inputs
// are random and fresh per run (the base seed is in every failure message); bf16 cases give both
// backends the same bf16-rounded values, the CPU computing in float32. Every allocation is
// NaN-filled (debug fill), so an output element a kernel forgets to write fails the finiteness check.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import {
  type RopeOptions,
  type Tensor,
  add,
  addBias,
  buildInfo,
  cast,
  cudaMatmulCounts,
  cudaSetDebugFill,
  embedding,
  linearCrossEntropy,
  linearCrossEntropyLoss,
  matmul,
  matmulInto,
  randn,
  rmsnorm,
  rmsnormBackward,
  rmsnormResidual,
  rope,
  ropeBackward,
  ropeBackwardWithTable,
  ropeQKBackwardWithTable,
  ropeQKVBackwardCat,
  ropeQKVSplit,
  ropeQKWithTable,
  ropeTable,
  ropeWithTable,
  scope,
  splitColumns,
  catColumns,
  sumRows,
  tensor,
} from "../../native/index.ts";
import { assertTensorClose } from "./compare.ts";
import { BASE_SEED, nextSeed, pairOf, seeded } from "./pairs.ts";

const F32 = 1e-5;
const BF16 = 1e-2;
type FloatDtype = "float32" | "bfloat16";

before(() => cudaSetDebugFill(true));
after(() => cudaSetDebugFill(false));

function assertRel(label: string, got: number, want: number, tol: number): void {
  assert.ok(Math.abs(got - want) <= tol * Math.abs(want), `${label}: ${got} vs ${want} (rel tol ${tol}) [seed ${BASE_SEED}]`);
}

/** Labels in [0, V), about a fifth of them the ignore index. */
function labelsOf(T: number, V: number, ignoreIndex: number): { cpu: Tensor; gpu: Tensor } {
  const data = Int32Array.from({ length: T }, () => (randomInt(0, 5) === 0 ? ignoreIndex : randomInt(0, V)));
  const cpu = tensor(data, [T], { dtype: "int32" });
  return { cpu, gpu: cpu.to("cuda") };
}

// ---------------------------------------------------------------- linear cross-entropy

// bf16: the GPU rounds the logits and their gradient to bf16 (the CPU keeps float32), so the
// loss sum agrees to 1e-3 and the gradients to 2e-2 of their largest element; fp32 to 1e-5 / 1e-4.
const CE_CASES: { dtype: FloatDtype; lossTol: number; gradTol: number }[] = [
  { dtype: "float32", lossTol: 1e-5, gradTol: 1e-4 },
  { dtype: "bfloat16", lossTol: 1e-3, gradTol: 2e-2 },
];

test("linearCrossEntropy: loss, count, dx and float32 dw match the CPU over chunk sizes, odd V and ignored labels", () => {
  for (const { dtype, lossTol, gradTol } of CE_CASES) {
    // [T, D, V, chunkSize]: T not a multiple of the chunk; V a multiple of 64 (512: logits rows as
    // they are) and not (1000, 1001, 999 and Qwen's 151,669: logits rows padded to a multiple of
    // 64, the GEMMs on w and dw as they are through the logits' row stride).
    const cases: [number, number, number, number | undefined][] = [
      [300, 64, 1000, 128],
      [300, 64, 1001, 77],
      [257, 40, 999, 1],
      [129, 64, 512, undefined],
      [200, 64, 151_669, 96],
    ];
    for (const [T, D, V, chunkSize] of cases) {
      scope(() => {
        const label = `${dtype} T=${T} D=${D} V=${V} chunk=${chunkSize ?? "default"}`;
        const x = pairOf([T, D], dtype);
        const w = pairOf([V, D], dtype, 0.2);
        const ignoreIndex = -100;
        const labels = labelsOf(T, V, ignoreIndex);
        const want = linearCrossEntropy(x.cpu, w.cpu, labels.cpu, { ignoreIndex, chunkSize: 64 });
        const gradScale = 1 / Math.max(want.count, 1);
        const wantScaled = linearCrossEntropy(x.cpu, w.cpu, labels.cpu, { ignoreIndex, chunkSize: 64, gradScale });
        const got = linearCrossEntropy(x.gpu, w.gpu, labels.gpu, { ignoreIndex, chunkSize, gradScale });
        assert.equal(got.count, want.count, `${label}: count`);
        assertRel(`${label}: loss`, got.loss, want.loss, lossTol);
        assert.equal(got.dw.dtype, "float32", "dw is a float32 parameter gradient on cuda");
        assert.equal(got.dx.dtype, dtype);
        assertTensorClose(got.dx, wantScaled.dx, gradTol, seeded(`${label}: dx`));
        assertTensorClose(got.dw, wantScaled.dw, gradTol, seeded(`${label}: dw`));
        const lossOnly = linearCrossEntropyLoss(x.gpu, w.gpu, labels.gpu, { ignoreIndex, chunkSize });
        assert.equal(lossOnly.count, want.count);
        assertRel(`${label}: loss without gradients`, lossOnly.loss, got.loss, 1e-12);
      });
    }
  }
});

test("linearCrossEntropy on the reference GEMMs (builds without cuBLASLt): odd V and D through the logits' row stride", () => {
  for (const { dtype, lossTol, gradTol } of CE_CASES) {
    const cases: [number, number, number, number][] = [
      [300, 64, 1001, 77],
      [130, 37, 999, 64],
      [96, 32, 512, 40],
    ];
    for (const [T, D, V, chunkSize] of cases) {
      scope(() => {
        const label = `reference ${dtype} T=${T} D=${D} V=${V} chunk=${chunkSize}`;
        const x = pairOf([T, D], dtype);
        const w = pairOf([V, D], dtype, 0.2);
        const ignoreIndex = -100;
        const labels = labelsOf(T, V, ignoreIndex);
        const gradScale = 1 / T;
        const want = linearCrossEntropy(x.cpu, w.cpu, labels.cpu, { ignoreIndex, chunkSize: 64, gradScale });
        const got = linearCrossEntropy(x.gpu, w.gpu, labels.gpu, { ignoreIndex, chunkSize, gradScale, reference: true });
        assert.equal(got.count, want.count, `${label}: count`);
        assertRel(`${label}: loss`, got.loss, want.loss, lossTol);
        assertTensorClose(got.dx, want.dx, gradTol, seeded(`${label}: dx`));
        assertTensorClose(got.dw, want.dw, gradTol, seeded(`${label}: dw`));
        const lossOnly = linearCrossEntropyLoss(x.gpu, w.gpu, labels.gpu, { ignoreIndex, chunkSize, reference: true });
        assertRel(`${label}: loss without gradients`, lossOnly.loss, got.loss, 1e-12);
      });
    }
  }
});

test("linearCrossEntropy: ignored rows give zero gradient, a bad label is an Error naming the op, results repeat bitwise", () => {
  scope(() => {
    const [T, D, V] = [70, 32, 200];
    const x = pairOf([T, D], "bfloat16");
    const w = pairOf([V, D], "bfloat16", 0.2);
    const ignoreIndex = 7; // an ignore index inside [0, V): those rows are still skipped
    const allIgnored = tensor(new Int32Array(T).fill(ignoreIndex), [T], { dtype: "int32", device: "cuda" });
    const none = linearCrossEntropy(x.gpu, w.gpu, allIgnored, { ignoreIndex, chunkSize: 32 });
    assert.equal(none.count, 0);
    assert.equal(none.loss, 0);
    assert.ok(none.dx.toFloat64Array().every((v) => v === 0), "dx zeros (written: the debug fill would show NaN)");
    assert.ok(none.dw.toFloat64Array().every((v) => v === 0), "dw zeros");

    const badData = Int32Array.from({ length: T }, (_, i) => i % V);
    badData[T - 3] = V;
    const bad = tensor(badData, [T], { dtype: "int32", device: "cuda" });
    assert.throws(() => linearCrossEntropy(x.gpu, w.gpu, bad, { chunkSize: 32 }), /linearCrossEntropy: a label is outside \[0, 200\)/);
    badData[T - 3] = -5;
    const neg = tensor(badData, [T], { dtype: "int32", device: "cuda" });
    assert.throws(() => linearCrossEntropyLoss(x.gpu, w.gpu, neg, {}), /linearCrossEntropy: a label is outside/);

    const labels = labelsOf(T, V, -100);
    const a = linearCrossEntropy(x.gpu, w.gpu, labels.gpu, { chunkSize: 16, gradScale: 0.25 });
    const b = linearCrossEntropy(x.gpu, w.gpu, labels.gpu, { chunkSize: 16, gradScale: 0.25 });
    assert.equal(a.loss, b.loss, "the loss sum has a fixed order");
    assert.deepEqual(a.dx.toFloat64Array(), b.dx.toFloat64Array());
    // A power-of-two gradScale scales every rounding step exactly.
    const c = linearCrossEntropy(x.gpu, w.gpu, labels.gpu, { chunkSize: 16, gradScale: 0.5 });
    assert.deepEqual(c.dx.toFloat64Array(), a.dx.toFloat64Array().map((v) => 2 * v), "gradScale 0.5 gives twice the dx of 0.25");
    assert.deepEqual(c.dw.toFloat64Array(), a.dw.toFloat64Array().map((v) => 2 * v), "and twice the dw");
  });
});

// ---------------------------------------------------------------- GEMM into an output, with a bias

test("matmulInto: bf16 or fp32 inputs into a float32 (or same-dtype) output, written or accumulated, both paths", () => {
  const before = cudaMatmulCounts();
  let lt = 0;
  let ref = 0;
  for (const dtype of ["float32", "bfloat16"] as const) {
    for (const [M, K, N] of [[37, 61, 129], [64, 256, 96], [5, 1, 3]] as const) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          for (const reference of [false, true]) {
            scope(() => {
              const label = `${dtype} ${M}x${K}x${N} ${transA} ${transB}${reference ? " reference" : ""}`;
              const a = pairOf(transA ? [K, M] : [M, K], dtype);
              const b = pairOf(transB ? [N, K] : [K, N], dtype);
              const init = pairOf([M, N], "float32");
              const product = matmul(a.cpu, b.cpu, { transA, transB });
              const acc = init.gpu.clone();
              matmulInto(acc, a.gpu, b.gpu, { transA, transB, accumulate: true, reference });
              // bf16 inputs are exact in fp32 and the output is fp32: only the summation order differs.
              assertTensorClose(acc, add(init.cpu, product), 1e-4, seeded(`accumulate ${label}`));
              const fresh = randn([M, N], { seed: nextSeed(), device: "cuda" });
              matmulInto(fresh, a.gpu, b.gpu, { transA, transB, reference });
              assertTensorClose(fresh, product, 1e-4, seeded(`write ${label}`));
              const same = randn([M, N], { seed: nextSeed(), dtype, device: "cuda" });
              matmulInto(same, a.gpu, b.gpu, { transA, transB, reference });
              assertTensorClose(same, product, dtype === "float32" ? 1e-4 : BF16, seeded(`write ${dtype} out ${label}`));
              // Accumulating into the inputs' dtype: a layer's dx summed over the projections that read its input.
              const base = pairOf([M, N], dtype);
              const sum = base.gpu.clone();
              matmulInto(sum, a.gpu, b.gpu, { transA, transB, accumulate: true, reference });
              assertTensorClose(sum, add(base.cpu, product), dtype === "float32" ? 1e-4 : BF16, seeded(`accumulate ${dtype} out ${label}`));
              if (reference) ref += 4;
              else lt += 4;
            });
          }
        }
      }
    }
  }
  const counts = cudaMatmulCounts();
  if (buildInfo().cublasLt) assert.equal(counts.cublasLt - before.cublasLt, lt, "cuBLASLt served every default-path GEMM (bf16 into fp32 included)");
  assert.equal(counts.reference - before.reference, buildInfo().cublasLt ? ref : ref + lt);
});

test("matmulInto refuses an out of the wrong shape or dtype, or one sharing an input's storage", () => {
  scope(() => {
    const a = randn([4, 8], { seed: nextSeed(), dtype: "bfloat16", device: "cuda" });
    const b = randn([8, 6], { seed: nextSeed(), dtype: "bfloat16", device: "cuda" });
    assert.throws(() => matmulInto(randn([4, 5], { seed: 1, device: "cuda" }), a, b), /matmulInto: out must have shape \[4, 6\]/);
    const sq = randn([8, 8], { seed: nextSeed(), device: "cuda" });
    assert.throws(() => matmulInto(sq, sq, sq), /matmulInto: out must not share storage/);
  });
});

test("matmul with bias (y = x W^T + b): cuBLASLt's epilogue and the reference, 2-D and batched, odd N", () => {
  for (const { dtype, tol } of [{ dtype: "float32" as const, tol: 1e-4 }, { dtype: "bfloat16" as const, tol: BF16 }]) {
    for (const [B, M, K, N] of [[0, 37, 64, 129], [0, 256, 128, 96], [3, 17, 40, 50], [0, 8, 16, 7]] as const) {
      for (const reference of [false, true]) {
        scope(() => {
          const lead = B > 0 ? [B] : [];
          const x = pairOf([...lead, M, K], dtype);
          const W = pairOf(B > 0 ? [B, N, K] : [N, K], dtype);
          const bias = pairOf([N], dtype);
          const want = matmul(x.cpu, W.cpu, { transB: true, bias: bias.cpu });
          const got = matmul(x.gpu, W.gpu, { transB: true, bias: bias.gpu, reference });
          assertTensorClose(got, want, tol, seeded(`matmul bias ${dtype} ${B}x${M}x${K}x${N}${reference ? " reference" : ""}`));
        });
      }
    }
  }
});

test("the cuBLASLt plan cache keeps at most 256 shapes: 300 token counts in a row, then the first again, all correct", () => {
  scope(() => {
    const K = 16;
    const N = 24;
    const w = pairOf([N, K], "bfloat16");
    const before = cudaMatmulCounts();
    const check = (M: number) =>
      scope(() => {
        const x = pairOf([M, K], "bfloat16");
        assertTensorClose(matmul(x.gpu, w.gpu, { transB: true }), matmul(x.cpu, w.cpu, { transB: true }), BF16, seeded(`matmul M=${M}`));
      });
    for (let M = 1; M <= 300; M++) check(M);
    for (let M = 1; M <= 10; M++) check(M); // evicted, planned again
    if (buildInfo().cublasLt) assert.equal(cudaMatmulCounts().cublasLt - before.cublasLt, 310);
  });
});

test("addBias and sumRows (float32 out, fixed order) match the CPU", () => {
  for (const { dtype, tol } of [{ dtype: "float32" as const, tol: F32 }, { dtype: "bfloat16" as const, tol: BF16 }]) {
    // The 1.5B step's q and k/v bias gradients ([8192, 1536], [8192, 256]); narrow strips of 8
    // and 3 vectors (lanes below 32); a scalar strip (13, 7); rows not a multiple of the chunk.
    for (const shape of [[300, 2048], [7, 3, 13], [5000, 256], [1, 1], [8192, 1536], [8192, 256], [1000, 64], [129, 24], [4100, 7]]) {
      scope(() => {
        const N = shape.at(-1)!;
        const x = pairOf(shape, dtype);
        const b = pairOf([N], dtype);
        assertTensorClose(addBias(x.gpu, b.gpu), addBias(x.cpu, b.cpu), tol, seeded(`addBias ${dtype} ${shape}`));
        const s = sumRows(x.gpu);
        assert.equal(s.dtype, "float32");
        assertTensorClose(s, sumRows(x.cpu), 1e-5, seeded(`sumRows ${dtype} ${shape}`));
        assert.deepEqual(sumRows(x.gpu).toFloat64Array(), s.toFloat64Array(), "sumRows repeats bitwise");
      });
    }
  }
});

// ---------------------------------------------------------------- vectorised memory-bound kernels

test("rmsnorm and rmsnormBackward at the vector path's edges: wide rows, many rows per warp, repeatable dw", () => {
  for (const { dtype, tol } of [{ dtype: "float32" as const, tol: F32 }, { dtype: "bfloat16" as const, tol: BF16 }]) {
    // 4096 bf16: forward vector path at its widest, backward scalar; 5000 rows: several rows per warp;
    // 264: one or a few vectors per lane; 1004: not a whole number of bf16 vectors (the scalar
    // path), 251 fp32 ones.
    for (const shape of [[9, 4096], [5000, 1536], [33, 264], [21, 1004], [17, 2048]]) {
      scope(() => {
        const D = shape.at(-1)!;
        const x = pairOf(shape, dtype);
        const w = pairOf([D], dtype);
        const g = rmsnorm(x.gpu, w.gpu, 1e-6);
        const c = rmsnorm(x.cpu, w.cpu, 1e-6);
        assertTensorClose(g.y, c.y, tol, seeded(`rmsnorm y ${dtype} ${shape}`));
        assertTensorClose(g.rstd, c.rstd, F32, seeded(`rmsnorm rstd ${dtype} ${shape}`));
        const dy = pairOf(shape, dtype);
        const gb = rmsnormBackward(dy.gpu, x.gpu, w.gpu, g.rstd);
        const cb = rmsnormBackward(dy.cpu, x.cpu, w.cpu, c.rstd);
        assertTensorClose(gb.dx, cb.dx, tol, seeded(`rmsnormBackward dx ${dtype} ${shape}`));
        assertTensorClose(gb.dw, cb.dw, dtype === "float32" ? 1e-5 : 1e-3, seeded(`rmsnormBackward dw ${dtype} ${shape}`));
        const again = rmsnormBackward(dy.gpu, x.gpu, w.gpu, g.rstd);
        assert.deepEqual(again.dw.toFloat64Array(), gb.dw.toFloat64Array(), "dw repeats bitwise");
        // With the residual stream's gradient added in the same pass (both the vector and the scalar path).
        const res = pairOf(shape, dtype);
        const gr = rmsnormBackward(dy.gpu, x.gpu, w.gpu, g.rstd, res.gpu);
        assertTensorClose(gr.dx, add(cb.dx, res.cpu), tol, seeded(`rmsnormBackward dx + residualGrad ${dtype} ${shape}`));
        assert.deepEqual(gr.dw.toFloat64Array(), gb.dw.toFloat64Array(), "dw does not depend on the residual");
      });
    }
  }
});

test("rmsnormResidual: sum = x + residual and y = rmsnorm(sum), as add then rmsnorm", () => {
  for (const { dtype, tol } of [{ dtype: "float32" as const, tol: F32 }, { dtype: "bfloat16" as const, tol: BF16 }]) {
    for (const shape of [[37, 1536], [3, 5], [129, 7, 64]]) {
      scope(() => {
        const D = shape.at(-1)!;
        const x = pairOf(shape, dtype);
        const r = pairOf(shape, dtype);
        const w = pairOf([D], dtype);
        const got = rmsnormResidual(x.gpu, r.gpu, w.gpu, 1e-6);
        // The reference rounds the sum to dtype first, as the kernel does.
        const sum = cast(cast(add(x.cpu, r.cpu), dtype), "float32");
        const want = rmsnorm(sum, w.cpu, 1e-6);
        assertTensorClose(got.sum, sum, dtype === "float32" ? F32 : 0, seeded(`rmsnormResidual sum ${dtype} ${shape}`));
        assertTensorClose(got.y, want.y, tol, seeded(`rmsnormResidual y ${dtype} ${shape}`));
        assertTensorClose(got.rstd, want.rstd, F32, seeded(`rmsnormResidual rstd ${dtype} ${shape}`));
      });
    }
  }
});

test("rope with head dims off the vector width (6, 10) and at its widest (256), one and many heads", () => {
  for (const { dtype, tol } of [{ dtype: "float32" as const, tol: 1e-5 }, { dtype: "bfloat16" as const, tol: BF16 }]) {
    for (const [H, Dh] of [[1, 6], [5, 10], [2, 256], [14, 128]] as const) {
      scope(() => {
        const T = 77;
        const posHost = tensor(Int32Array.from({ length: T }, () => randomInt(0, 4096)), [T], { dtype: "int32" });
        const pos = posHost.to("cuda");
        const x = pairOf([T, H, Dh], dtype);
        const label = `${dtype} H=${H} Dh=${Dh}`;
        assertTensorClose(rope(x.gpu, pos, { theta: 1e6 }), rope(x.cpu, posHost, { theta: 1e6 }), tol, seeded(`rope ${label}`));
        assertTensorClose(ropeBackward(x.gpu, pos, { theta: 1e4 }), ropeBackward(x.cpu, posHost, { theta: 1e4 }), tol, seeded(`ropeBackward ${label}`));
      });
    }
  }
});

test("ropeTable and rope through it match the CPU backend's table and direct rope, vector and scalar head dims", () => {
  const schedules: RopeOptions[] = [
    { theta: 1e6 },
    { theta: 1e4, scaling: { type: "yarn", factor: 4, originalMaxPositionEmbeddings: 4096 } },
  ];
  for (const opts of schedules) {
    for (const [H, Dh] of [[1, 6], [5, 10], [2, 128], [12, 128], [2, 256]] as const) {
      scope(() => {
        const T = 301;
        const posHost = tensor(Int32Array.from({ length: T }, () => randomInt(0, 32768)), [T], { dtype: "int32" });
        const pos = posHost.to("cuda");
        const tag = `H=${H} Dh=${Dh} ${opts.scaling?.type ?? "default"}`;
        const table = ropeTable(pos, Dh, opts);
        const tableCpu = ropeTable(posHost, Dh, opts);
        assert.equal(table.dtype, "float32");
        // Both take cos / sin of the same float32 angle in double, then round once.
        assertTensorClose(table, tableCpu, 1e-6, seeded(`ropeTable ${tag}`));
        for (const { dtype, tol } of [{ dtype: "float32" as const, tol: F32 }, { dtype: "bfloat16" as const, tol: BF16 }]) {
          const x = pairOf([T, H, Dh], dtype);
          const label = `${dtype} ${tag}`;
          assertTensorClose(ropeWithTable(x.gpu, table), rope(x.cpu, posHost, opts), tol, seeded(`ropeWithTable ${label}`));
          assertTensorClose(ropeBackwardWithTable(x.gpu, table), ropeBackward(x.cpu, posHost, opts), tol, seeded(`ropeBackwardWithTable ${label}`));
        }
      });
    }
  }
  scope(() => {
    const pos = tensor(Int32Array.from([0, 1]), [2], { dtype: "int32", device: "cuda" });
    assert.throws(() => ropeTable(pos, 4, { theta: 1e4 }, "float64"), /ropeTable: the table is float32 on cuda/);
    const x = randn([2, 1, 6], { seed: nextSeed(), device: "cuda" });
    assert.throws(() => ropeWithTable(x, ropeTable(pos, 4, { theta: 1e4 })), /ropeWithTable: table must have shape \[2, 2, 3\]/);
  });
});

test("ropeQKWithTable rotates q and k in one launch as ropeWithTable does each, forward and backward", () => {
  const opts: RopeOptions = { theta: 1e6 };
  // [Hq, Hk, Dh]: the 1.5B and 0.5B layers (12 / 2 of 128, 14 / 2 of 64), one k head (3 + 1), and
  // head dims off the vector width (10, 6: the scalar kernel).
  for (const [Hq, Hk, Dh] of [[12, 2, 128], [14, 2, 64], [3, 1, 128], [7, 3, 10], [1, 1, 6]] as const) {
    for (const { dtype, tol } of [{ dtype: "float32" as const, tol: F32 }, { dtype: "bfloat16" as const, tol: BF16 }]) {
      scope(() => {
        const T = 257;
        const posHost = tensor(Int32Array.from({ length: T }, () => randomInt(0, 32768)), [T], { dtype: "int32" });
        const table = ropeTable(posHost.to("cuda"), Dh, opts);
        const q = pairOf([T, Hq, Dh], dtype);
        const k = pairOf([T, Hk, Dh], dtype);
        const label = `${dtype} Hq=${Hq} Hk=${Hk} Dh=${Dh}`;
        const fwd = ropeQKWithTable(q.gpu, k.gpu, table);
        assertTensorClose(fwd.q, rope(q.cpu, posHost, opts), tol, seeded(`ropeQKWithTable q ${label}`));
        assertTensorClose(fwd.k, rope(k.cpu, posHost, opts), tol, seeded(`ropeQKWithTable k ${label}`));
        assert.deepEqual(fwd.q.toFloat64Array(), ropeWithTable(q.gpu, table).toFloat64Array(), `q as ropeWithTable ${label}`);
        assert.deepEqual(fwd.k.toFloat64Array(), ropeWithTable(k.gpu, table).toFloat64Array(), `k as ropeWithTable ${label}`);
        const bwd = ropeQKBackwardWithTable(q.gpu, k.gpu, table);
        assertTensorClose(bwd.q, ropeBackward(q.cpu, posHost, opts), tol, seeded(`ropeQKBackwardWithTable q ${label}`));
        assertTensorClose(bwd.k, ropeBackward(k.cpu, posHost, opts), tol, seeded(`ropeQKBackwardWithTable k ${label}`));
      });
    }
  }
  scope(() => {
    const table = ropeTable(tensor(Int32Array.from([0, 1]), [2], { dtype: "int32", device: "cuda" }), 4, opts);
    const q = randn([2, 2, 4], { seed: nextSeed(), device: "cuda" });
    const kb = randn([2, 1, 4], { seed: nextSeed(), dtype: "bfloat16", device: "cuda" });
    assert.throws(() => ropeQKWithTable(q, kb, table), /ropeQKWithTable: k is bfloat16 but q is float32/);
    assert.throws(() => ropeQKWithTable(q, q.to("cpu"), table), /ropeQKWithTable: .* is on cpu but .* is on cuda/);
  });
});

/** The column sums of a [rows, cols] tensor's values, in float64 on the host (a float32 CPU tensor). */
function columnSumsOf(t: Tensor): Tensor {
  const [rows, cols] = t.shape as [number, number];
  const v = t.toFloat64Array();
  const sums = new Float64Array(cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) sums[c] = sums[c]! + v[r * cols + c]!;
  return tensor(Float32Array.from(sums), [cols]);
}

test("ropeQKVSplit / ropeQKVBackwardCat: a fused projection's columns rotated and moved in one launch, as split + ropeQKWithTable (+ cat)", () => {
  const opts: RopeOptions = { theta: 1e6 };
  for (const [Hq, Hk, Dh] of [[12, 2, 128], [14, 2, 64], [7, 3, 10]] as const) {
    for (const { dtype, tol } of [{ dtype: "float32" as const, tol: F32 }, { dtype: "bfloat16" as const, tol: BF16 }]) {
      scope(() => {
        const T = 257;
        const posHost = tensor(Int32Array.from({ length: T }, () => randomInt(0, 32768)), [T], { dtype: "int32" });
        const table = ropeTable(posHost.to("cuda"), Dh, opts);
        const label = `${dtype} Hq=${Hq} Hk=${Hk} Dh=${Dh}`;
        const qkv = pairOf([T, (Hq + 2 * Hk) * Dh], dtype);
        const [q, k, v] = splitColumns(qkv.gpu, [Hq * Dh, Hk * Dh, Hk * Dh]).map((t, i) => t.reshape([T, i === 0 ? Hq : Hk, Dh]));
        const got = ropeQKVSplit(qkv.gpu, table, Hq, Hk);
        const want = ropeQKWithTable(q!, k!, table);
        assert.deepEqual(got.q.toFloat64Array(), want.q.toFloat64Array(), `q as split + ropeQKWithTable ${label}`);
        assert.deepEqual(got.k.toFloat64Array(), want.k.toFloat64Array(), `k as split + ropeQKWithTable ${label}`);
        assert.deepEqual(got.v.toFloat64Array(), v!.toFloat64Array(), `v moved as it is ${label}`);
        assert.deepEqual([got.q.shape, got.k.shape, got.v.shape], [[T, Hq, Dh], [T, Hk, Dh], [T, Hk, Dh]]);
        // Against the CPU's direct rope (no table, another kernel): q and k both.
        const [qCpu, kCpu] = splitColumns(qkv.cpu, [Hq * Dh, Hk * Dh, Hk * Dh]);
        assertTensorClose(got.q, rope(qCpu!.reshape([T, Hq, Dh]), posHost, opts), tol, seeded(`ropeQKVSplit q against the CPU's rope ${label}`));
        assertTensorClose(got.k, rope(kCpu!.reshape([T, Hk, Dh]), posHost, opts), tol, seeded(`ropeQKVSplit k against the CPU's rope ${label}`));
        const { dqkv: back, columnSums } = ropeQKVBackwardCat(got.q, got.k, got.v, table, { columnSums: true });
        const b = ropeQKBackwardWithTable(got.q, got.k, table);
        const cat = catColumns([b.q.reshape([T, Hq * Dh]), b.k.reshape([T, Hk * Dh]), got.v.reshape([T, Hk * Dh])]);
        assert.deepEqual(back.toFloat64Array(), cat.toFloat64Array(), `backward as ropeQKBackwardWithTable + cat ${label}`);
        // Rotating forward then back is the identity up to rounding: the columns of qkv again.
        assertTensorClose(back, qkv.cpu, dtype === "float32" ? 1e-5 : 2e-2, seeded(`ropeQKVBackwardCat(ropeQKVSplit(x)) = x ${label}`));
        // The column sums of dqkv as stored, against the CPU's sums of the same values (float64).
        assert.equal(columnSums!.dtype, "float32");
        assertTensorClose(columnSums!, columnSumsOf(back), 1e-5, seeded(`ropeQKVBackwardCat column sums ${label}`));
        assert.equal(ropeQKVBackwardCat(got.q, got.k, got.v, table).columnSums, undefined);
        if (dtype === "float32") {
          // float32 gradients (the attention backward's sums) into a bfloat16 dqkv: the float32 result rounded once.
          const narrow = ropeQKVBackwardCat(got.q, got.k, got.v, table, { dtype: "bfloat16", columnSums: true });
          assert.equal(narrow.dqkv.dtype, "bfloat16");
          assert.deepEqual(narrow.dqkv.toFloat64Array(), cast(back, "bfloat16").toFloat64Array(), `float32 -> bfloat16 dqkv ${label}`);
          assertTensorClose(narrow.columnSums!, columnSumsOf(narrow.dqkv), 1e-5, seeded(`float32 -> bfloat16 column sums of the stored values ${label}`));
        } else {
          assert.throws(() => ropeQKVBackwardCat(got.q, got.k, got.v, table, { dtype: "float32" }), /ropeQKVBackwardCat: bfloat16 gradients cannot give a float32 dqkv/);
        }
      });
    }
  }
  scope(() => {
    const table = ropeTable(tensor(Int32Array.from([0, 1]), [2], { dtype: "int32", device: "cuda" }), 4, opts);
    const qkv = randn([2, 15], { seed: nextSeed(), device: "cuda" });
    assert.throws(() => ropeQKVSplit(qkv, table, 2, 1), /ropeQKVSplit: qkv \[2, 15\] is not \[T, \(2 \+ 2 \* 1\) \* 4\]/);
  });
});

test("embedding forward copies rows bitwise, vector rows and odd widths", () => {
  for (const dtype of ["float32", "bfloat16"] as const) {
    for (const D of [1536, 7, 12]) {
      scope(() => {
        const V = 300;
        const w = pairOf([V, D], dtype);
        const idsHost = tensor(Int32Array.from({ length: 513 }, () => randomInt(0, V)), [513], { dtype: "int32" });
        const got = embedding(w.gpu, idsHost.to("cuda"));
        assert.deepEqual(got.toFloat64Array(), embedding(w.cpu, idsHost).toFloat64Array(), `embedding ${dtype} D=${D}`);
      });
    }
  }
});
