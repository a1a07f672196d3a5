import { test } from "node:test";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import {
  tensor, scope, liveTensors, matmul, add, mul, scale, scaleInPlace, addInto, addBias, sumRows, sumSquares, globalNorm,
} from "../../native/index.ts";
import * as ref from "./reference/ops.ts";
import { assertClose, gradcheck } from "./reference/gradcheck.ts";

const f32 = (a: Float64Array, shape: number[]) => tensor(Float32Array.from(a), shape);
const f64 = (a: Float64Array, shape: number[]) => tensor(a, shape, { dtype: "float64" });
const arr = (t: { toArray(): ArrayLike<unknown> }) => Float64Array.from(t.toArray() as ArrayLike<number>);

test("matmul agrees with the reference for transposes and odd shapes (float32 rtol 1e-5, atol 1e-5)", () => {
  // Sizes cross the kernel's blocking: K > 256 (two depth slices), M > 96 rows, N > 256 columns.
  const shapes: [number, number, number][] = [[1, 1, 1], [1, 7, 3], [5, 1, 9], [13, 17, 11], [130, 300, 270], [7, 513, 2]];
  scope(() => {
    for (const [M, K, N] of shapes) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          const a = ref.randArray(M * K, M + K, 1);
          const b = ref.randArray(K * N, K + N + 1, 1);
          const want = ref.matmul(a, b, M, K, N, transA, transB);
          const got = matmul(f32(a, transA ? [K, M] : [M, K]), f32(b, transB ? [N, K] : [K, N]), { transA, transB });
          assert.deepEqual(got.shape, [M, N]);
          const tol = { rtol: 1e-5, atol: 1e-5 * Math.sqrt(K) };
          assertClose(arr(got), Float32Array.from(want), tol, `matmul ${M}x${K}x${N} tA=${transA} tB=${transB}`);
          const got64 = matmul(f64(a, transA ? [K, M] : [M, K]), f64(b, transB ? [N, K] : [K, N]), { transA, transB });
          assertClose(arr(got64), want, { rtol: 1e-12, atol: 1e-12 }, `matmul f64 ${M}x${K}x${N}`);
        }
      }
    }
  });
});

test("the AVX2 register blocking agrees too where AVX-512 would be chosen (child process, TESSERA_CPU_NO_AVX512=1)", () => {
  const script = `
    import { tensor, matmul } from "./native/index.ts";
    const [M, K, N] = [37, 300, 45];
    const a = Float64Array.from({ length: M * K }, (_, i) => Math.sin(i));
    const b = Float64Array.from({ length: K * N }, (_, i) => Math.cos(i));
    const c = matmul(tensor(a, [K, M], { dtype: "float64" }), tensor(b, [N, K], { dtype: "float64" }), { transA: true, transB: true }).toFloat64Array();
    let worst = 0;
    for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += a[k * M + i] * b[j * K + k];
      worst = Math.max(worst, Math.abs(s - c[i * N + j]));
    }
    console.log(worst);`;
  const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    cwd: fileURLToPath(new URL("../..", import.meta.url)),
    env: { ...process.env, TESSERA_CPU_NO_AVX512: "1" },
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(Number(r.stdout.trim()) < 1e-10, `max error ${r.stdout}`);
});

test("batched matmul runs each batch entry", () => {
  scope(() => {
    const [B, M, K, N] = [3, 4, 5, 6];
    const a = ref.randArray(B * M * K, 1);
    const b = ref.randArray(B * K * N, 2);
    const got = arr(matmul(f64(a, [B, M, K]), f64(b, [B, N, K]), { transB: true }));
    for (let i = 0; i < B; i++) {
      const want = ref.matmul(a.subarray(i * M * K, (i + 1) * M * K), b.subarray(i * K * N, (i + 1) * K * N), M, K, N, false, true);
      assertClose(got.subarray(i * M * N, (i + 1) * M * N), want, { rtol: 1e-12, atol: 1e-12 }, `batch ${i}`);
    }
    assert.throws(() => matmul(f64(a, [B, M, K]), f64(b, [B, K, N]).reshape([K * B, N])), /matmul: a \[3, 4, 5\] and b \[15, 6\] must both be 2-D or both 3-D/);
    assert.throws(() => matmul(f64(a, [B * M, K]), f64(b, [B * N, K])), /matmul: inner dimensions differ/);
  });
});

test("matmul gradients (dA = dY B^T, dB = A^T dY) pass a float64 finite-difference check (rtol 1e-6)", () => {
  const [M, K, N] = [3, 4, 5];
  scope(() => {
    gradcheck({
      label: "matmul",
      inputs: [ref.randArray(M * K, 3), ref.randArray(K * N, 4)],
      wrt: [0, 1],
      r: ref.randArray(M * N, 5),
      f: ([a, b]) => scope(() => arr(matmul(f64(a!, [M, K]), f64(b!, [K, N])))),
      analytic: ([a, b], r) =>
        scope(() => [
          arr(matmul(f64(r, [M, N]), f64(b!, [K, N]), { transB: true })),
          arr(matmul(f64(a!, [M, K]), f64(r, [M, N]), { transA: true })),
        ]),
    });
  });
});

test("addBias gradients (dx = dy, db = sumRows(dy)) and mul's pass a float64 finite-difference check", () => {
  const [T, N] = [4, 5];
  gradcheck({
    label: "addBias",
    inputs: [ref.randArray(T * N, 30), ref.randArray(N, 31)],
    wrt: [0, 1],
    r: ref.randArray(T * N, 32),
    f: ([x, b]) => scope(() => arr(addBias(f64(x!, [T, N]), f64(b!, [N])))),
    analytic: (_, r) => scope(() => [r.slice(), arr(sumRows(f64(r, [T, N])))]),
  });
  gradcheck({
    label: "mul",
    inputs: [ref.randArray(T * N, 33), ref.randArray(T * N, 34)],
    wrt: [0, 1],
    r: ref.randArray(T * N, 35),
    f: ([a, b]) => scope(() => arr(mul(f64(a!, [T, N]), f64(b!, [T, N])))),
    analytic: ([a, b], r) => scope(() => [arr(mul(f64(r, [T, N]), f64(b!, [T, N]))), arr(mul(f64(r, [T, N]), f64(a!, [T, N])))]),
  });
});

test("elementwise helpers agree with plain loops", () => {
  scope(() => {
    const n = 1001;
    const a = ref.randArray(n, 6), b = ref.randArray(n, 7);
    assertClose(arr(add(f64(a, [n]), f64(b, [n]))), a.map((x, i) => x + b[i]!), { rtol: 0, atol: 0 }, "add");
    assertClose(arr(mul(f64(a, [n]), f64(b, [n]))), a.map((x, i) => x * b[i]!), { rtol: 0, atol: 0 }, "mul");
    assertClose(arr(scale(f64(a, [n]), -2.5)), a.map((x) => x * -2.5), { rtol: 0, atol: 0 }, "scale");
    const d = f64(a, [n]);
    addInto(d, f64(b, [n]), 0.5);
    assertClose(arr(d), a.map((x, i) => x + 0.5 * b[i]!), { rtol: 1e-15, atol: 0 }, "addInto");
    scaleInPlace(d, 2);
    assertClose(arr(d), a.map((x, i) => 2 * (x + 0.5 * b[i]!)), { rtol: 1e-15, atol: 0 }, "scaleInPlace");
    const [T, N] = [7, 143];
    const x = ref.randArray(T * N, 8), bias = ref.randArray(N, 9);
    assertClose(arr(addBias(f32(x, [T, N]), f32(bias, [N]))), x.map((v, i) => v + bias[i % N]!), { rtol: 1e-6, atol: 1e-6 }, "addBias");
    const colSums = new Float64Array(N);
    x.forEach((v, i) => (colSums[i % N] = colSums[i % N]! + v));
    assertClose(arr(sumRows(f64(x, [T, N]))), colSums, { rtol: 1e-12, atol: 1e-12 }, "sumRows");
    const ss = a.reduce((s, v) => s + v * v, 0);
    assert.ok(Math.abs(sumSquares(f32(a, [n])) - ss) < 1e-5 * ss);
    assert.ok(Math.abs(globalNorm([f64(a, [n]), f64(b, [n])]) - Math.sqrt(ss + b.reduce((s, v) => s + v * v, 0))) < 1e-12);
    assert.throws(() => add(f64(a, [n]), f32(b, [n])), /add: b is float32 but a is float64/);
    assert.throws(() => addBias(f64(x, [T, N]), f64(bias, [N]).reshape([1, N])), /addBias: b must be \[N\]/);
  });
});

test("a forward and backward of a small MLP in a scope leaks nothing", () => {
  const start = liveTensors();
  scope(() => {
    const x = f32(ref.randArray(8 * 16, 1), [8, 16]);
    const w = f32(ref.randArray(32 * 16, 2), [32, 16]);
    const b = f32(ref.randArray(32, 3), [32]);
    const h = addBias(matmul(x, w, { transB: true }), b);
    const dh = scale(h, 0.1);
    const dw = matmul(dh, x, { transA: true });
    const gw = f32(new Float64Array(32 * 16), [32, 16]);
    addInto(gw, dw);
    const gb = sumRows(dh).reshape([32, 1]);
    assert.deepEqual(gb.shape, [32, 1]);
  });
  assert.deepEqual(liveTensors(), start);
});
