// matmulInto and matmul's bias on the CPU backend, against the float64 reference GEMM.
import { test } from "node:test";
import assert from "node:assert/strict";
import { tensor, scope, liveTensors, matmul, matmulInto, rmsnorm, rmsnormBackward, rmsnormResidual } from "../../native/index.ts";
import * as ref from "./reference/ops.ts";
import { assertClose } from "./reference/gradcheck.ts";

const f32 = (a: Float64Array, shape: number[]) => tensor(Float32Array.from(a), shape);
const arr = (t: { toArray(): ArrayLike<unknown> }) => Float64Array.from(t.toArray() as ArrayLike<number>);

test("matmulInto writes, or adds with accumulate, op(a) op(b) for every transpose (float32)", () => {
  const [M, K, N] = [13, 17, 11];
  const start = liveTensors();
  scope(() => {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        const a = ref.randArray(M * K, 3, 1);
        const b = ref.randArray(K * N, 4, 1);
        const init = ref.randArray(M * N, 5, 1);
        const product = ref.matmul(a, b, M, K, N, transA, transB);
        const A = f32(a, transA ? [K, M] : [M, K]);
        const B = f32(b, transB ? [N, K] : [K, N]);
        const tol = { rtol: 1e-5, atol: 1e-5 * Math.sqrt(K) };
        const out = f32(init, [M, N]);
        matmulInto(out, A, B, { transA, transB });
        assertClose(arr(out), Float32Array.from(product), tol, `write tA=${transA} tB=${transB}`);
        const acc = f32(init, [M, N]);
        matmulInto(acc, A, B, { transA, transB, accumulate: true });
        assertClose(arr(acc), product.map((p, i) => p + Math.fround(init[i]!)), tol, `accumulate tA=${transA} tB=${transB}`);
      }
    }
  });
  assert.deepEqual(liveTensors(), start, "the temporaries are freed");
});

test("matmulInto refuses a wrong shape or dtype of out", () => {
  scope(() => {
    const a = f32(ref.randArray(6, 1, 1), [2, 3]);
    const b = f32(ref.randArray(12, 2, 1), [3, 4]);
    assert.throws(() => matmulInto(f32(new Float64Array(6), [2, 3]), a, b), /matmulInto: out must have shape \[2, 4\]/);
    assert.throws(() => matmulInto(tensor(new Int32Array(8), [2, 4]), a, b), /matmulInto/);
  });
});

test("matmul with bias adds b to every row, 2-D and batched", () => {
  scope(() => {
    const [M, K, N] = [5, 7, 9];
    const a = ref.randArray(M * K, 6, 1);
    const b = ref.randArray(N * K, 7, 1);
    const bias = ref.randArray(N, 8, 1);
    const want = ref.matmul(a, b, M, K, N, false, true).map((v, i) => v + bias[i % N]!);
    const got = matmul(f32(a, [M, K]), f32(b, [N, K]), { transB: true, bias: f32(bias, [N]) });
    assert.deepEqual(got.shape, [M, N]);
    assertClose(arr(got), Float32Array.from(want), { rtol: 1e-5, atol: 1e-5 }, "2-D");
    const a2 = ref.randArray(2 * M * K, 9, 1);
    const b2 = ref.randArray(2 * K * N, 10, 1);
    const got3 = arr(matmul(f32(a2, [2, M, K]), f32(b2, [2, K, N]), { bias: f32(bias, [N]) }));
    for (let z = 0; z < 2; z++) {
      const p = ref.matmul(a2.subarray(z * M * K), b2.subarray(z * K * N), M, K, N, false, false);
      const w = p.map((v, i) => v + bias[i % N]!);
      assertClose(got3.subarray(z * M * N, (z + 1) * M * N), Float32Array.from(w), { rtol: 1e-5, atol: 1e-5 }, `batch ${z}`);
    }
    assert.throws(() => matmul(f32(a, [M, K]), f32(b, [N, K]), { transB: true, bias: f32(bias.subarray(1), [N - 1]) }), /matmul: bias/);
  });
});

test("rmsnormResidual on the CPU: y = rmsnorm(x + residual) against float64, the sum returned as stored", () => {
  scope(() => {
    const [xa, ra, wa] = [ref.randArray(4 * 6, 11, 1), ref.randArray(4 * 6, 12, 1), ref.randArray(6, 13, 1)];
    const got = rmsnormResidual(f32(xa, [4, 6]), f32(ra, [4, 6]), f32(wa, [6]), 1e-6);
    const sum = arr(got.sum);
    assertClose(sum, xa.map((v, i) => Math.fround(v) + Math.fround(ra[i]!)), { rtol: 1e-6, atol: 1e-6 }, "sum");
    assertClose(arr(got.y), ref.rmsnorm(sum, Float64Array.from(wa, Math.fround), 1e-6), { rtol: 1e-5, atol: 1e-6 }, "y");
  });
});

test("rmsnormBackward with residualGrad on the CPU adds it into dx and leaves dw alone", () => {
  scope(() => {
    const x = f32(ref.randArray(5 * 8, 14, 1), [5, 8]);
    const w = f32(ref.randArray(8, 15, 1), [8]);
    const dy = f32(ref.randArray(5 * 8, 16, 1), [5, 8]);
    const res = ref.randArray(5 * 8, 17, 1);
    const { rstd } = rmsnorm(x, w, 1e-6);
    const plain = rmsnormBackward(dy, x, w, rstd);
    const withRes = rmsnormBackward(dy, x, w, rstd, f32(res, [5, 8]));
    const want = arr(plain.dx).map((v, i) => v + Math.fround(res[i]!));
    assertClose(arr(withRes.dx), want, { rtol: 1e-6, atol: 1e-6 }, "dx + residualGrad");
    assert.deepEqual(arr(withRes.dw), arr(plain.dw));
  });
});
