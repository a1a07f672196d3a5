// `tessera train` on cuda, in this process as the CLI runs one rank: configs/qwen2_5-0_5b-gpu.yaml
// shrunk to two narrow layers (head dim 64, the tokenizer's full vocabulary), bf16 over fp32
// masters. The run writes per-step metrics with the device allocator's figures and MFU,
// checkpoints the fp32 masters, and a second run resumes from the checkpoint: its steps after
// the resume follow the uninterrupted run's losses (to bf16 and atomics' run-to-run noise).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../../runtime/index.ts";
import { startTraining, type TrainRecord } from "../../actors/index.ts";
import { cudaAvailable } from "../../native/index.ts";

const root = join(import.meta.dirname, "..", "..");
const SKIP = cudaAvailable() ? false : "no CUDA device here: run it on the GPU machine";

function gpuConfig(out: string, extra: string[]) {
  return loadConfig(join(root, "configs/qwen2_5-0_5b-gpu.yaml"), {
    overrides: [
      `output_dir=${JSON.stringify(out)}`,
      "model.config.hidden_size=256",
      "model.config.num_hidden_layers=2",
      "model.config.num_attention_heads=4",
      "model.config.intermediate_size=512",
      "data.packing_length=512",
      "trainer.micro_batch_tokens=1024",
      "trainer.log_every=1",
      "optimizer.lr=1e-3",
      "optimizer.schedule.name=constant",
      "optimizer.schedule.warmup_steps=0",
      ...extra,
    ],
  });
}

const quiet = { write: () => true, isTTY: false };

function trainRecords(dir: string): TrainRecord[] {
  return readFileSync(join(dir, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l))
    .filter((r): r is TrainRecord => r.kind === "train");
}

test("tessera train on cuda: metrics with device memory, checkpoints of the fp32 masters, resume", { skip: SKIP, timeout: 300_000 }, async () => {
  const whole = mkdtempSync(join(tmpdir(), "tessera-gpu-job-"));
  const split = mkdtempSync(join(tmpdir(), "tessera-gpu-job-"));
  try {
    const a = await startTraining(gpuConfig(whole, ["trainer.max_steps=8", "checkpoint.every=4"]), { stderr: quiet });
    const sa = await a.done;
    assert.equal(sa.state, "done", sa.reason);
    const ra = trainRecords(whole);
    assert.deepEqual(ra.map((r) => r.step), [1, 2, 3, 4, 5, 6, 7, 8]);
    for (const r of ra) {
      assert.ok(Number.isFinite(r.loss) && Number.isFinite(r.grad_norm!), `step ${r.step}: loss ${r.loss}, grad_norm ${r.grad_norm}`);
      assert.ok(r.memory.cuda && r.memory.cuda.peak > 0 && r.memory.cuda.reserved >= r.memory.cuda.allocated, `step ${r.step}: ${JSON.stringify(r.memory)}`);
      assert.equal(typeof r.mfu, "number", "cuda has a peak to measure MFU against");
    }
    assert.ok(ra[7]!.loss < ra[0]!.loss, `the loss falls: ${ra.map((r) => r.loss.toFixed(3)).join(", ")}`);

    // Stopped at step 4, then resumed to 8 in a fresh job.
    const b1 = await startTraining(gpuConfig(split, ["trainer.max_steps=4", "checkpoint.every=4"]), { stderr: quiet });
    assert.equal((await b1.done).state, "done");
    const b2 = await startTraining(gpuConfig(split, ["trainer.max_steps=8", "checkpoint.every=4"]), { stderr: quiet });
    const sb = await b2.done;
    assert.equal(sb.state, "done", sb.reason);
    const rb = trainRecords(split).filter((r) => r.step > 4);
    assert.deepEqual(rb.map((r) => r.step), [5, 6, 7, 8]);
    for (const r of rb) {
      const want = ra[r.step - 1]!.loss;
      assert.ok(Math.abs(r.loss - want) <= 2e-2 * want, `step ${r.step} after resume: loss ${r.loss} vs ${want} uninterrupted`);
    }
  } finally {
    rmSync(whole, { recursive: true, force: true });
    rmSync(split, { recursive: true, force: true });
  }
});
