import { test } from "node:test";
import assert from "node:assert/strict";
import { createSchedule } from "../../models/optim/index.ts";

const close = (got: number, want: number, label: string) => assert.ok(Math.abs(got - want) <= 1e-12 * Math.max(1, Math.abs(want)), `${label}: ${got} != ${want}`);
const section = (name: "constant" | "cosine" | "wsd", warmup_steps: number, extra: { decay_fraction?: number; min_lr_ratio?: number } = {}) => ({
  name,
  warmup_steps,
  decay_fraction: extra.decay_fraction ?? 0.1,
  min_lr_ratio: extra.min_lr_ratio ?? 0.1,
});

test("warmup is linear from lr/W at step 0 to lr at step W-1, the same for every schedule", () => {
  for (const name of ["constant", "cosine", "wsd"] as const) {
    const f = createSchedule(section(name, 10), { lr: 3e-4, maxSteps: 100 });
    close(f(0), 3e-4 / 10, `${name} step 0`);
    close(f(4), (3e-4 * 5) / 10, `${name} step 4`);
    close(f(9), 3e-4, `${name} warmup end`);
    close(f(10), 3e-4, `${name} first step after warmup`);
  }
});

test("constant holds lr after warmup, and without warmup from step 0", () => {
  const f = createSchedule(section("constant", 0), { lr: 1e-3, maxSteps: 50 });
  for (const s of [0, 1, 25, 49, 80]) close(f(s), 1e-3, `step ${s}`);
});

test("cosine: lr after warmup, half-way lr_min + (lr - lr_min)/2, min_lr_ratio * lr at the last step and after", () => {
  const lr = 1e-3;
  const minLr = 0.1 * lr;
  const f = createSchedule(section("cosine", 10), { lr, maxSteps: 111 });
  // Decay spans steps 10..110 (100 steps).
  close(f(10), lr, "start");
  close(f(60), minLr + (lr - minLr) / 2, "mid");
  close(f(35), minLr + (lr - minLr) * 0.5 * (1 + Math.cos(Math.PI / 4)), "quarter");
  close(f(110), minLr, "last step");
  close(f(500), minLr, "past the end");
  for (let s = 11; s <= 110; s++) assert.ok(f(s) < f(s - 1), `decreasing at ${s}`);
  const noWarm = createSchedule(section("cosine", 0, { min_lr_ratio: 0 }), { lr, maxSteps: 3 });
  close(noWarm(0), lr, "3-step cosine start");
  close(noWarm(1), lr / 2, "3-step cosine mid");
  close(noWarm(2), 0, "3-step cosine end");
});

test("wsd: stable at lr until the last ceil(decay_fraction * maxSteps) steps, then 1-sqrt down to min_lr at the last step", () => {
  const lr = 2e-3;
  const minLr = 0.2 * lr;
  const f = createSchedule(section("wsd", 5, { decay_fraction: 0.2, min_lr_ratio: 0.2 }), { lr, maxSteps: 100 });
  // D = 20 decay steps: 80..99.
  close(f(5), lr, "stable start");
  close(f(79), lr, "stable end");
  close(f(80), minLr + (lr - minLr) * (1 - Math.sqrt(1 / 20)), "first decay step");
  close(f(84), minLr + (lr - minLr) * (1 - Math.sqrt(5 / 20)), "quarter of the decay");
  close(f(89), minLr + (lr - minLr) * (1 - Math.sqrt(10 / 20)), "mid decay");
  close(f(99), minLr, "last step");
  close(f(1000), minLr, "past the end");
  // ceil: 0.15 * 10 = 1.5 -> 2 decay steps.
  const g = createSchedule(section("wsd", 0, { decay_fraction: 0.15, min_lr_ratio: 0 }), { lr, maxSteps: 10 });
  close(g(7), lr, "before a 2-step decay");
  close(g(8), lr * (1 - Math.sqrt(0.5)), "first of 2");
  close(g(9), 0, "last of 2");
});

test("schedules refuse what the config check would, and bad steps", () => {
  assert.throws(() => createSchedule(section("cosine", 11), { lr: 1, maxSteps: 10 }), /warmup_steps must be an integer in \[0, 10\]/);
  assert.throws(() => createSchedule(section("wsd", 8, { decay_fraction: 0.3 }), { lr: 1, maxSteps: 10 }), /exceeds maxSteps \(8 \+ 3 > 10\)/);
  assert.throws(() => createSchedule(section("cosine", 0), { lr: 0, maxSteps: 10 }), /lr must be a finite number > 0/);
  const f = createSchedule(section("cosine", 0), { lr: 1, maxSteps: 10 });
  assert.throws(() => f(-1), /step must be an integer >= 0/);
  assert.throws(() => f(1.5), /step must be an integer >= 0/);
  // All steps in warmup: the last one reaches lr.
  const w = createSchedule(section("cosine", 4), { lr: 1, maxSteps: 4 });
  assert.deepEqual([0, 1, 2, 3].map(w), [0.25, 0.5, 0.75, 1]);
});
