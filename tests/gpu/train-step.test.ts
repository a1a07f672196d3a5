// A full training step of a small Qwen2 on cuda (bf16 compute over fp32 master weights and
// gradients) against transformers (float32, made in this run by make_train_step_fixture.py)
// and against our CPU backend (float32) on the same weights and packed batch (one sequence
// of length 1). Tolerances: bf16 rounds activations to 8 bits of mantissa (2^-9 relative) at
// every op of two layers, so the loss must agree to 2e-2 relative and each parameter's
// gradient to 5e-2 of that tensor's largest reference magnitude (plus 1e-6); the CPU side must
// agree with transformers to float32 tolerances, which shows the reference is the same model.
// Then AdamW steps on both devices: the losses must follow each other, and the bf16 copy the
// model computes with must be exactly bf16(master) after every update.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { SafetensorsReader, createOptimizer, loadHF, noDecay, type CausalLM, type PackedBatch } from "../../models/index.ts";
import { cast, cudaSetDebugFill, cudaSynchronize, liveTensors } from "../../native/index.ts";
import { assertClose } from "./compare.ts";

const here = dirname(fileURLToPath(import.meta.url));
const torchReady = spawnSync("python3", ["-c", "import torch, transformers"], { stdio: "ignore" }).status === 0;
const dir = mkdtempSync(join(tmpdir(), "tessera-train-step-"));

before(() => {
  if (!torchReady) return;
  const r = spawnSync("python3", [join(here, "make_train_step_fixture.py"), dir], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`make_train_step_fixture.py failed:\n${r.stdout}\n${r.stderr}`);
  cudaSetDebugFill(true);
});
after(() => {
  cudaSetDebugFill(false);
  rmSync(dir, { recursive: true, force: true });
});

interface Reference {
  loss: number;
  count: number;
  parameters: string[];
}

async function fixture(): Promise<{ meta: Reference; ref: SafetensorsReader; batch: PackedBatch }> {
  const meta = JSON.parse(readFileSync(join(dir, "reference.json"), "utf8")) as Reference;
  const ref = await SafetensorsReader.open(join(dir, "reference.safetensors"));
  const batch: PackedBatch = {
    tokens: await ref.readInt32("tokens"),
    positions: await ref.readInt32("positions"),
    cuSeqlens: await ref.readInt32("cu_seqlens"),
    labels: await ref.readInt32("labels"),
  };
  return { meta, ref, batch };
}

const skip = torchReady ? false : "python3 with torch and transformers is not importable here";

test("a Qwen2 training step on cuda (bf16 over fp32 masters) matches transformers and the CPU backend", { skip }, async () => {
  const { meta, ref, batch } = await fixture();
  const cpu = (await loadHF(dir)).model;
  const gpu = (await loadHF(dir)).model.place("cuda", "bfloat16");
  try {
    assert.equal(gpu.device, "cuda");
    assert.equal(gpu.computeDtype, "bfloat16");
    for (const p of gpu.params()) {
      assert.equal(p.master.dtype, "float32", `${p.name}: master`);
      assert.equal(p.value.dtype, "bfloat16", `${p.name}: compute copy`);
    }
    const rc = cpu.loss(batch);
    const rg = gpu.loss(batch);
    assert.equal(rc.count, meta.count);
    assert.equal(rg.count, meta.count);
    assert.ok(Math.abs(rc.loss - meta.loss) <= 1e-5 * meta.loss, `cpu loss ${rc.loss} vs transformers ${meta.loss}`);
    assert.ok(Math.abs(rg.loss - meta.loss) <= 2e-2 * meta.loss, `cuda loss ${rg.loss} vs transformers ${meta.loss}`);

    const cpuT = new Map(cpu.hfTensors().map((t) => [t.name, t]));
    const gpuT = new Map(gpu.hfTensors().map((t) => [t.name, t]));
    for (const name of meta.parameters) {
      const want = await ref.readFloat32(`grad.${name}`, cpuT.get(name)!.shape);
      assertClose(cpuT.get(name)!.readGrad(), want, 1e-4, `cpu grad of ${name}`);
      const g = gpu.params().find((p) => p.name === name)!;
      assert.equal(g.grad?.dtype, "float32", `${name}: the gradient accumulates in fp32`);
      assertClose(gpuT.get(name)!.readGrad(), want, 5e-2, `cuda grad of ${name}`);
    }
  } finally {
    cpu.dispose();
    gpu.dispose();
  }
});

test("AdamW on cuda follows the CPU run, and the bf16 copy is bf16(master) after every update", { skip }, async () => {
  const { batch } = await fixture();
  const models: CausalLM[] = [(await loadHF(dir)).model, (await loadHF(dir)).model.place("cuda", "bfloat16")];
  const cfg = { name: "adamw" as const, betas: [0.9, 0.95] as [number, number], eps: 1e-8, weight_decay: 0.1, muon: { momentum: 0.95, nesterov: true, ns_steps: 5 } };
  const opts = models.map((m) => createOptimizer(cfg, m.params().map((p) => p.optimParam()), { noDecay }));
  const before = liveTensors().cudaCount;
  try {
    const losses: number[][] = [[], []];
    for (let step = 0; step < 4; step++) {
      models.forEach((m, i) => {
        losses[i]!.push(m.loss(batch).loss);
        opts[i]!.step(3e-3);
        m.zeroGrad();
      });
      for (const p of models[1]!.params()) {
        const want = cast(p.master, "bfloat16");
        const a = want.toArray();
        const b = p.value.toArray();
        want.dispose();
        assert.deepEqual(b, a, `step ${step}: ${p.name}'s compute copy is not bf16(master)`);
      }
    }
    const [lc, lg] = losses as [number[], number[]];
    assert.ok(lc[3]! < lc[0]! && lg[3]! < lg[0]!, `the loss falls on both: cpu ${lc.join(", ")}; cuda ${lg.join(", ")}`);
    lc.forEach((l, i) => assert.ok(Math.abs(lg[i]! - l) <= 3e-2 * l, `step ${i}: cuda loss ${lg[i]} vs cpu ${l}`));
    cudaSynchronize();
    // Steps in steady state leave no device tensors behind (gradients dropped, optimizer state made once).
    assert.ok(liveTensors().cudaCount - before <= models[1]!.params().length * 2, `live cuda tensors grew from ${before} to ${liveTensors().cudaCount}`);
  } finally {
    opts.forEach((o) => o.dispose());
    models.forEach((m) => m.dispose());
  }
});
