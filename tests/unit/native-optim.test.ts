import { test } from "node:test";
import assert from "node:assert/strict";
import { tensor, scope, scale, adamwStep, adamwStepMany, newtonSchulz5, muonStep, matmul } from "../../native/index.ts";
import * as ref from "./reference/ops.ts";
import { assertClose } from "./reference/gradcheck.ts";

const f32 = (a: Float64Array, shape: number[]) => tensor(Float32Array.from(a), shape);
const f64 = (a: Float64Array, shape: number[]) => tensor(a, shape, { dtype: "float64" });
const arr = (t: { toArray(): ArrayLike<unknown> }) => Float64Array.from(t.toArray() as ArrayLike<number>);

test("adamwStep follows torch.optim.AdamW over several steps (float32 rtol 1e-5)", () => {
  scope(() => {
    const n = 1037;
    const hp = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
    const p = ref.randArray(n, 1), m = new Float64Array(n), v = new Float64Array(n);
    const tp = f32(p, [n]), tm = f32(m, [n]), tv = f32(v, [n]);
    for (let step = 1; step <= 5; step++) {
      const g = ref.randArray(n, 100 + step);
      ref.adamw(p, g, m, v, hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weightDecay, step);
      adamwStep(tp, f32(g, [n]), tm, tv, { ...hp, step });
    }
    assertClose(arr(tp), p, { rtol: 1e-5, atol: 1e-6 }, "param");
    assertClose(arr(tm), m, { rtol: 1e-5, atol: 1e-7 }, "m");
    assertClose(arr(tv), v, { rtol: 1e-5, atol: 1e-9 }, "v");
    assert.throws(() => adamwStep(tp, f32(p, [n]), tm, tv, { ...hp, step: 0 }), /adamwStep: step must be an integer >= 1/);
    assert.throws(() => adamwStep(tp, f32(p.subarray(1), [n - 1]), tm, tv, { ...hp, step: 1 }), /adamwStep: param \[1037\] and grad \[1036\] differ in shape/);
  });
});

test("newtonSchulz5 matches the reference iteration and gives singular values near 1", () => {
  scope(() => {
    for (const [M, N] of [[8, 20], [20, 8], [16, 16], [1, 5]] as const) {
      const g = ref.randArray(M * N, M * 100 + N);
      const want = ref.newtonSchulz5(g, M, N);
      const got = newtonSchulz5(f32(g, [M, N]));
      assertClose(arr(got), want, { rtol: 1e-4, atol: 1e-4 }, `NS ${M}x${N}`);
      assertClose(arr(newtonSchulz5(f64(g, [M, N]))), want, { rtol: 1e-10, atol: 1e-12 }, `NS f64 ${M}x${N}`);
      // X X^T (or X^T X for tall X) is the identity up to the quintic's band, roughly [0.7, 1.2] for singular values.
      const small = Math.min(M, N);
      const gram = arr(M <= N ? matmul(got, got, { transB: true }) : matmul(got, got, { transA: true }));
      for (let i = 0; i < small; i++) {
        for (let j = 0; j < small; j++) {
          const x = gram[i * small + j]!;
          if (i === j) assert.ok(x > 0.45 && x < 1.5, `NS ${M}x${N}: diagonal ${i} is ${x}`);
          else assert.ok(Math.abs(x) < 0.3, `NS ${M}x${N}: off-diagonal (${i},${j}) is ${x}`);
        }
      }
    }
  });
});

test("muonStep applies Moonlight's update: Nesterov momentum, NS5, 0.2*sqrt(max(M,N)) scale, decoupled decay", () => {
  scope(() => {
    const [M, N] = [6, 10];
    const lr = 0.02, mu = 0.95, wd = 0.1;
    const p = ref.randArray(M * N, 1), buf = ref.randArray(M * N, 2, 0.1);
    const tp = f64(p, [M, N]), tb = f64(buf, [M, N]);
    for (let step = 0; step < 3; step++) {
      const g = ref.randArray(M * N, 10 + step);
      for (let i = 0; i < buf.length; i++) buf[i] = mu * buf[i]! + g[i]!;
      const u = ref.newtonSchulz5(g.map((x, i) => x + mu * buf[i]!), M, N);
      const s = lr * 0.2 * Math.sqrt(Math.max(M, N));
      for (let i = 0; i < p.length; i++) p[i] = p[i]! * (1 - lr * wd) - s * u[i]!;
      muonStep(tp, f64(g, [M, N]), tb, { lr, momentum: mu, nesterov: true, weightDecay: wd });
    }
    assertClose(arr(tb), buf, { rtol: 1e-12, atol: 1e-12 }, "momentum");
    assertClose(arr(tp), p, { rtol: 1e-10, atol: 1e-12 }, "param");
    assert.throws(() => muonStep(f64(p, [M * N]), f64(p, [M * N]), f64(p, [M * N]), { lr }), /muonStep: param must be 2-D/);
  });
});

test("adamwStepMany on the CPU equals adamwStep on each scaled gradient and leaves the gradients as they were", () => {
  scope(() => {
    const rand = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 12.9898 + i * 78.233) * 0.5);
    const sizes = [0, 1, 7, 130];
    const gradScale = 0.37;
    const mk = (n: number, i: number) => ({
      param: tensor(rand(n, 1 + i), [n]),
      grad: tensor(rand(n, 11 + i), [n]),
      m: tensor(rand(n, 21 + i).map((x) => x * 0.1), [n]),
      v: tensor(rand(n, 31 + i).map((x) => x * x * 0.01), [n]),
    });
    const ours = sizes.map(mk);
    const want = sizes.map(mk);
    const gradsBefore = ours.map((it) => Array.from(it.grad.toFloat64Array()));
    const hp = (i: number) => ({ lr: 1e-3 * (1 + i), weightDecay: i % 2 ? 0.1 : 0, step: 1 + i });
    adamwStepMany(ours.map((it, i) => ({ ...it, ...hp(i) })), { beta1: 0.9, beta2: 0.95, eps: 1e-8, gradScale });
    want.forEach((it, i) => {
      const g = scale(it.grad, gradScale);
      adamwStep(it.param, g, it.m, it.v, { beta1: 0.9, beta2: 0.95, eps: 1e-8, ...hp(i) });
    });
    ours.forEach((it, i) => {
      assert.deepEqual(Array.from(it.grad.toFloat64Array()), gradsBefore[i], `grad ${i} unchanged`);
      assert.deepEqual(Array.from(it.param.toFloat64Array()), Array.from(want[i]!.param.toFloat64Array()), `param ${i}`);
      assert.deepEqual(Array.from(it.m.toFloat64Array()), Array.from(want[i]!.m.toFloat64Array()), `m ${i}`);
      assert.deepEqual(Array.from(it.v.toFloat64Array()), Array.from(want[i]!.v.toFloat64Array()), `v ${i}`);
    });
  });
});
