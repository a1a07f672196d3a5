// Muon under the plans: on whole parameters (DP) models' MuonWithAdamW runs as on one rank;
// on FSDP shards each matrix is orthogonalised whole on an owner rank (Moonlight) and the
// result must equal one rank's Muon step.
import { test } from "node:test";
import assert from "node:assert/strict";
import { assertMatches, batchOf, meshStep, referenceStep, tinyConfigs } from "./mesh-plans-kit.ts";

const two = [batchOf([5, 9, 2], 1), batchOf([7, 3, 6], 2)];
const four = [...two, batchOf([4, 4, 8], 3), batchOf([11, 5], 4)];

test("Muon with DP=2 (whole parameters) equals a single rank", async () => {
  const run = await meshStep(tinyConfigs.qwen2!, "float64", { dp: 2, fsdp: 1, sp: 1 }, two, { optimizer: "muon" });
  assertMatches(run, referenceStep(tinyConfigs.qwen2!, "float64", two, "muon"), 1e-10);
});

test("Muon with FSDP=2 (matrices orthogonalised on owner ranks): three steps equal a single rank's", async () => {
  const run = await meshStep(tinyConfigs.gpt2!, "float64", { dp: 1, fsdp: 2, sp: 1 }, two, { optimizer: "muon", steps: 3 });
  assertMatches(run, referenceStep(tinyConfigs.gpt2!, "float64", two, "muon", 3), 1e-10);
});

test("Muon with dp=2 x fsdp=2 (qwen3, float32) matches a single rank within 1e-5", async () => {
  const run = await meshStep(tinyConfigs.qwen3!, "float32", { dp: 2, fsdp: 2, sp: 1 }, four, { optimizer: "muon" });
  assertMatches(run, referenceStep(tinyConfigs.qwen3!, "float32", four, "muon"), 1e-5);
});

test("Muon's update differs from AdamW's here, so the comparison above is not vacuous", () => {
  const a = referenceStep(tinyConfigs.gpt2!, "float64", two, "adamw");
  const m = referenceStep(tinyConfigs.gpt2!, "float64", two, "muon");
  const name = "transformer.h.0.mlp.c_fc.weight";
  const diff = a.params.get(name)!.reduce((s, v, i) => Math.max(s, Math.abs(v - m.params.get(name)![i]!)), 0);
  assert.ok(diff > 1e-4, `max diff ${diff}`);
});
