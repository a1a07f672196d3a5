import { test } from "node:test";
import assert from "node:assert/strict";
import { clipGradNorm, createOptimizer, createSchedule, zeroGrad, type Optimizer, type OptimizerStateDict } from "../../models/optim/index.ts";
import type { Param } from "../../models/index.ts";
import { decode, encode } from "../../runtime/index.ts";
import { liveTensors } from "../../native/index.ts";
import { param, rand, setGrad, values } from "./optim-reference.ts";

const spec: [string, number[]][] = [
  ["model.embed_tokens.weight", [10, 6]],
  ["model.layers.0.mlp.up_proj.weight", [8, 6]],
  ["model.layers.0.mlp.up_proj.bias", [8]],
  ["model.norm.weight", [6]],
];
const config = (name: "adamw" | "muon") => ({
  name,
  betas: [0.9, 0.95] as [number, number],
  eps: 1e-8,
  weight_decay: 0.1,
  muon: { momentum: 0.95, nesterov: true, ns_steps: 5 },
});
const schedule = createSchedule({ name: "cosine", warmup_steps: 2, decay_fraction: 0.1, min_lr_ratio: 0.1 }, { lr: 1e-2, maxSteps: 8 });

function makeParams(from?: Float32Array[]): Param[] {
  return spec.map(([name, shape], i) => param(name, from ? Float64Array.from(from[i]!) : rand(shape.reduce((a, b) => a * b, 1), 7 + i), shape));
}

/** One training step: deterministic gradients (the bias gets none on step 2), clip, update at the schedule's lr. */
function trainStep(opt: Optimizer, ps: Param[]): void {
  const s = opt.stepCount;
  ps.forEach((p, i) => {
    if (s === 2 && p.name.endsWith(".bias")) p.zeroGrad();
    else setGrad(p, rand(p.value.numel, 1000 * s + i, 2));
  });
  const c = clipGradNorm(ps, 1.0);
  assert.equal(c.finite, true);
  opt.step(schedule(s));
}

for (const name of ["adamw", "muon"] as const) {
  test(`${name}: resuming from a state dict sent through the codec gives bit-identical parameters to an uninterrupted run`, () => {
    const straight = makeParams();
    const first = makeParams();
    const optA = createOptimizer(config(name), straight);
    const optB = createOptimizer(config(name), first);
    let resumed: Param[] = [];
    let optC: Optimizer | undefined;
    try {
      for (let i = 0; i < 6; i++) trainStep(optA, straight);
      for (let i = 0; i < 3; i++) trainStep(optB, first);
      const saved = decode(encode(optB.stateDict())) as OptimizerStateDict;
      assert.ok(saved.params["model.layers.0.mlp.up_proj.weight"]!.buffers[name === "muon" ? "momentum_buffer" : "exp_avg"] instanceof Float32Array);
      assert.equal(saved.params["model.layers.0.mlp.up_proj.bias"]!.step, 2, "the bias missed step 2");
      resumed = makeParams(first.map((p) => p.value.toArray() as Float32Array));
      optC = createOptimizer(config(name), resumed);
      optC.loadStateDict(saved);
      assert.equal(optC.stepCount, 3);
      for (let i = 0; i < 3; i++) trainStep(optC, resumed);
      straight.forEach((p, i) => assert.deepEqual(values(resumed[i]!.value), values(p.value), p.name));
      assert.deepEqual(optC.stateDict(), optA.stateDict());
    } finally {
      for (const o of [optA, optB, optC]) o?.dispose();
      for (const p of [...straight, ...first, ...resumed]) p.dispose();
    }
  });
}

test("loadStateDict names the parameter at fault and changes nothing when it refuses", () => {
  const ps = makeParams();
  const opt = createOptimizer(config("muon"), ps);
  const adam = createOptimizer(config("adamw"), ps);
  try {
    trainStep(opt, ps);
    trainStep(adam, ps);
    const good = opt.stateDict();
    const w = "model.layers.0.mlp.up_proj.weight";
    const bad = (edit: (s: OptimizerStateDict) => void): OptimizerStateDict => {
      const s = structuredClone(good);
      edit(s);
      return s;
    };
    const cases: [OptimizerStateDict, RegExp][] = [
      [bad((s) => (s.params["model.ghost.weight"] = s.params[w]!)), /parameter "model\.ghost\.weight" is not one of this optimizer's parameters/],
      [bad((s) => (s.params[w]!.shape = [6, 8])), /parameter "model\.layers\.0\.mlp\.up_proj\.weight" has shape \[6, 8\], the parameter \[8, 6\]/],
      [bad((s) => (s.params[w]!.buffers["momentum_buffer"] = new Float32Array(47))), /"model\.layers\.0\.mlp\.up_proj\.weight": buffer momentum_buffer must be a Float32Array or Float64Array of 48 elements/],
      [bad((s) => (s.params["model.norm.weight"]!.buffers = { exp_avg: new Float32Array(6) })), /"model\.norm\.weight" has buffers \[exp_avg\], expected \[exp_avg, exp_avg_sq\]/],
      [bad((s) => (s.params["model.norm.weight"]!.step = 2)), /"model\.norm\.weight": step must be an integer in \[1, 1\], got 2/],
      [bad((s) => (s.step = -1)), /step must be an integer >= 0/],
      [adam.stateDict(), /parameter "model\.layers\.0\.mlp\.up_proj\.weight" holds adamw state but is routed to muon/],
    ];
    for (const [s, re] of cases) {
      assert.throws(() => opt.loadStateDict(s), re);
      assert.deepEqual(opt.stateDict(), good);
    }
  } finally {
    opt.dispose();
    adam.dispose();
    for (const p of ps) p.dispose();
  }
});

test("steps, clipping, state export and import leak no tensors; dispose frees the state", () => {
  const ps = makeParams();
  const opt = createOptimizer(config("muon"), ps);
  try {
    const step = () => {
      ps.forEach((p, i) => setGrad(p, rand(p.value.numel, 100 * opt.stepCount + i)));
      clipGradNorm(ps, 0.5);
      opt.step(schedule(opt.stepCount));
    };
    step();
    const afterFirst = liveTensors();
    // Held now: 4 parameters, 4 gradients, 1 momentum buffer, 3 x 2 AdamW moments.
    for (let i = 0; i < 5; i++) {
      step();
      opt.loadStateDict(opt.stateDict());
      assert.deepEqual(liveTensors(), afterFirst, `after step ${opt.stepCount}`);
    }
    opt.dispose();
    assert.equal(liveTensors().count, afterFirst.count - 7);
    zeroGrad(ps);
    assert.equal(liveTensors().count, afterFirst.count - 7 - 4);
  } finally {
    opt.dispose();
    for (const p of ps) p.dispose();
  }
});
