import { test } from "node:test";
import assert from "node:assert/strict";
import { AdamW, createOptimizer, noDecay } from "../../models/optim/index.ts";
import { Param } from "../../models/index.ts";
import { tensor, type DType } from "../../native/index.ts";
import { adamwRef, assertNear, param, rand, setGrad, toF32, values, type AdamWRefState } from "./optim-reference.ts";

const shapes: Record<string, number[]> = { "layer.weight": [7, 5], "layer.bias": [7], "norm.weight": [5] };
const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);

// Six steps with a changing lr (as a schedule gives) and one parameter missing a gradient on
// step 3, so its bias correction must count its own updates (as torch's per-parameter step does).
function runAgainstReference(dtype: DType, tol: { rtol: number; atol: number }) {
  const h = { betas: [0.9, 0.95] as const, eps: 1e-8, weightDecay: 0.1 };
  const round = dtype === "float32" ? toF32 : (a: Float64Array) => a;
  const params = Object.entries(shapes).map(([name, s], i) => param(name, round(rand(numel(s), 10 + i)), s, dtype));
  const ref = new Map(params.map((p) => [p.name, { p: values(p.value), s: { step: 0, m: new Float64Array(p.value.numel), v: new Float64Array(p.value.numel) } as AdamWRefState }]));
  const opt = new AdamW(params, h);
  try {
    for (let step = 1; step <= 6; step++) {
      const lr = 1e-2 * (1 - step / 10);
      for (const [i, p] of params.entries()) {
        if (step === 3 && p.name === "layer.bias") {
          p.zeroGrad();
          continue;
        }
        const g = round(rand(p.value.numel, 1000 * step + i, 0.5));
        setGrad(p, g);
        const r = ref.get(p.name)!;
        adamwRef(r.p, g, r.s, { lr, betas: h.betas, eps: h.eps, weightDecay: p.shape.length >= 2 ? h.weightDecay : 0 });
      }
      opt.step(lr);
    }
    for (const p of params) assertNear(values(p.value), ref.get(p.name)!.p, tol, `${dtype} ${p.name}`);
    const state = opt.stateDict();
    assert.equal(state.step, 6);
    assert.equal(state.params["layer.bias"]!.step, 5);
    assert.equal(state.params["layer.weight"]!.step, 6);
    assertNear(state.params["layer.weight"]!.buffers["exp_avg"]!, ref.get("layer.weight")!.s.m, tol, "exp_avg");
    assertNear(state.params["layer.weight"]!.buffers["exp_avg_sq"]!, ref.get("layer.weight")!.s.v, { rtol: tol.rtol, atol: 1e-12 }, "exp_avg_sq");
  } finally {
    opt.dispose();
    for (const p of params) p.dispose();
  }
}

test("AdamW equals torch.optim.AdamW's float64 reference over 6 steps (float64: rtol 1e-12)", () => {
  runAgainstReference("float64", { rtol: 1e-12, atol: 1e-14 });
});

test("AdamW in float32 stays within rtol 1e-5 of the float64 reference over 6 steps", () => {
  runAgainstReference("float32", { rtol: 1e-5, atol: 1e-6 });
});

test("weight decay reaches matrices only: a zero-gradient vector keeps its value, a matrix shrinks by 1 - lr*wd", () => {
  const w = param("w", new Float64Array(6).fill(2), [2, 3]);
  const b = param("b", new Float64Array(3).fill(2), [3]);
  const opt = new AdamW([w, b], { weightDecay: 0.5 });
  try {
    assert.deepEqual(opt.decayed(), ["w"]);
    assert.equal(noDecay("model.norm.weight", [16]), true);
    assert.equal(noDecay("model.embed_tokens.weight", [40, 16]), false);
    setGrad(w, new Float64Array(6));
    setGrad(b, new Float64Array(3));
    opt.step(0.1);
    // Zero gradient: m = v = 0, so the Adam part adds exactly 0 and only decay acts.
    assert.deepEqual([...values(w.value)], new Array(6).fill(Math.fround(2 * (1 - 0.1 * 0.5))));
    assert.deepEqual([...values(b.value)], [2, 2, 2]);
  } finally {
    opt.dispose();
    w.dispose();
    b.dispose();
  }
});

test("createOptimizer builds AdamW from the config's betas, eps and weight decay", () => {
  const h = { betas: [0.8, 0.9] as const, eps: 1e-6, weightDecay: 0.2 };
  const p = param("w", rand(12, 3), [3, 4], "float64");
  const want = values(p.value);
  const s = { step: 0, m: new Float64Array(12), v: new Float64Array(12) };
  const opt = createOptimizer(
    { name: "adamw", betas: [0.8, 0.9], eps: 1e-6, weight_decay: 0.2, muon: { momentum: 0.95, nesterov: true, ns_steps: 5 } },
    [p],
  );
  try {
    assert.deepEqual([...opt.algorithms()], [["w", "adamw"]]);
    for (let step = 1; step <= 3; step++) {
      const g = rand(12, 50 + step);
      setGrad(p, g);
      adamwRef(want, g, s, { lr: 0.01, ...h });
      opt.step(0.01);
    }
    assertNear(values(p.value), want, { rtol: 1e-12, atol: 1e-14 }, "w");
  } finally {
    opt.dispose();
    p.dispose();
  }
});

test("a gradient that does not match its parameter is an error naming it, and no parameter moves", () => {
  const a = param("a", rand(4, 1), [2, 2]);
  // Param cannot hold a mis-shaped gradient; a sharded or hand-made parameter could.
  const b = { name: "b", value: tensor(rand(4, 2), [2, 2], { dtype: "float32" }), grad: tensor(rand(4, 4), [4], { dtype: "float32" }), zeroGrad() {} };
  const before = [values(a.value), values(b.value)];
  const opt = new AdamW([a, b]);
  try {
    setGrad(a, rand(4, 3));
    assert.throws(() => opt.step(0.1), /parameter "b": gradient float32 \[4\] does not match value float32 \[2, 2\]/);
    assert.deepEqual([values(a.value), values(b.value)], before);
    assert.equal(opt.stepCount, 0);
    assert.throws(() => opt.step(Number.NaN), /lr must be a finite number >= 0/);
  } finally {
    opt.dispose();
    a.dispose();
    b.value.dispose();
    b.grad.dispose();
  }
});

test("AdamW refuses duplicate names, non-fp32 master weights and bad hyperparameters", () => {
  const a = param("a", rand(4, 1), [4]);
  const h = new Param("h", tensor(rand(4, 1), [4], { dtype: "bfloat16" }), false);
  try {
    assert.throws(() => new AdamW([a, a]), /parameter "a" is given twice/);
    assert.throws(() => new AdamW([h]), /parameter "h" is bfloat16/);
    assert.throws(() => new AdamW([a], { betas: [0.9, 1] }), /betas must lie in \[0, 1\)/);
    assert.throws(() => new AdamW([a], { eps: 0 }), /eps must be a finite number > 0/);
    assert.throws(() => new AdamW([a], { weightDecay: -1 }), /weight_decay must be a finite number >= 0/);
    const opt = new AdamW([a]);
    opt.dispose();
    assert.throws(() => opt.step(0.1), /used after dispose/);
  } finally {
    a.dispose();
    h.dispose();
  }
});

test("prepareStep: a dropped step changes nothing; an applied one equals step(); apply runs once", () => {
  const h = { betas: [0.9, 0.95] as const, eps: 1e-8, weightDecay: 0.1 };
  const make = () => Object.entries(shapes).map(([name, s], i) => param(name, rand(numel(s), 10 + i), s, "float64"));
  const [a, b] = [make(), make()];
  const [optA, optB] = [new AdamW(a, h), new AdamW(b, h)];
  try {
    for (const ps of [a, b]) for (const [i, p] of ps.entries()) setGrad(p, rand(p.value.numel, 100 + i, 0.5));
    const before = a.map((p) => values(p.value));
    // Dropped: as a skipped update (non-finite norm) leaves it.
    optA.prepareStep(1e-2);
    assert.equal(optA.stepCount, 0);
    a.forEach((p, i) => assert.deepEqual(values(p.value), before[i], `${p.name} moved by a dropped step`));
    const prepared = optA.prepareStep(1e-2);
    prepared.apply(0.5);
    optB.step(1e-2, 0.5);
    a.forEach((p, i) => assert.deepEqual(values(p.value), values(b[i]!.value), `${p.name}: prepareStep + apply against step`));
    assert.equal(optA.stepCount, 1);
    assert.equal(optA.stateDict().params["layer.weight"]!.step, 1);
    assert.throws(() => prepared.apply(0.5), /applied once/);
    prepared.drop(); // after apply: nothing
    const dropped = optA.prepareStep(1e-2);
    dropped.drop();
    assert.throws(() => dropped.apply(0.5), /was dropped/);
    assert.throws(() => optA.prepareStep(1e-2).apply(Number.NaN), /gradScale must be finite/);
    assert.equal(optA.stepCount, 1);
  } finally {
    for (const o of [optA, optB]) o.dispose();
    for (const p of [...a, ...b]) p.dispose();
  }
});

test("prepareStep: a dropped first step leaves no state to save; a stale prepared step is refused and changes nothing", () => {
  const h = { betas: [0.9, 0.95] as const, eps: 1e-8, weightDecay: 0.1 };
  const ps = Object.entries(shapes).map(([name, s], i) => param(name, rand(numel(s), 20 + i), s, "float64"));
  const opt = new AdamW(ps, h);
  try {
    for (const [i, p] of ps.entries()) setGrad(p, rand(p.value.numel, 200 + i, 0.5));
    // Dropped before any step (a non-finite first norm): the checkpoint must still load.
    opt.prepareStep(1e-2);
    const empty = opt.stateDict();
    assert.deepEqual(empty.params, {});
    opt.loadStateDict(empty);

    // Another step between the preparation and its apply.
    const early = opt.prepareStep(1e-2);
    opt.step(1e-2);
    const after = ps.map((p) => values(p.value));
    const saved = opt.stateDict();
    assert.throws(() => early.apply(1), /stale/);
    // Loaded state between them.
    const beforeLoad = opt.prepareStep(1e-2);
    opt.loadStateDict(saved);
    assert.throws(() => beforeLoad.apply(1), /stale/);
    // A gradient replaced between them.
    const beforeGrad = opt.prepareStep(1e-2);
    setGrad(ps[0]!, rand(ps[0]!.value.numel, 300, 0.5));
    assert.throws(() => beforeGrad.apply(1), /stale.*layer\.weight/);
    ps.forEach((p, i) => assert.deepEqual(values(p.value), after[i], `${p.name} moved by a refused step`));
    assert.equal(opt.stepCount, 1);
    assert.equal(opt.stateDict().params["layer.weight"]!.step, 1);
  } finally {
    opt.dispose();
    for (const p of ps) p.dispose();
  }
});
