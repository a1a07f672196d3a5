// The realistic example configs (Qwen2.5 SFT, FSDP over 8, Ulysses, Muon) validate without
// their inputs, which a user supplies (`tessera config validate --no-check-paths`); their
// mesh lays out on the world they are meant for and divides the model's heads; the inline
// model shapes are Qwen2.5's (checked against the published parameter counts); and each
// file's header tells the user every input path it reads.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { DeviceMesh } from "../../mesh/index.ts";
import { configFromHF, type DecoderConfig } from "../../models/index.ts";
import { loadConfig, type JobConfig } from "../../runtime/config/index.ts";

const dir = join(import.meta.dirname, "..", "..", "configs");

interface Expect {
  world: number;
  mesh: { dp: number; fsdp: number; sp: number };
  optimizer: "adamw" | "muon";
  /** The released model whose shapes the inline config copies; absent: model.path. */
  params?: number;
}

// Parameter counts of Qwen/Qwen2.5-0.5B and Qwen/Qwen2.5-1.5B (safetensors metadata, tied head).
const QWEN25_05B = 494_032_768;
const QWEN25_15B = 1_543_714_304;

const EXAMPLES: Record<string, Expect> = {
  "qwen2_5-0_5b-sft.yaml": { world: 1, mesh: { dp: 1, fsdp: 1, sp: 1 }, optimizer: "adamw" },
  "qwen2_5-1_5b-fsdp8.yaml": { world: 8, mesh: { dp: 1, fsdp: 8, sp: 1 }, optimizer: "adamw", params: QWEN25_15B },
  "qwen2_5-1_5b-ulysses2.yaml": { world: 8, mesh: { dp: 1, fsdp: 4, sp: 2 }, optimizer: "adamw", params: QWEN25_15B },
  "qwen2_5-0_5b-muon.yaml": { world: 1, mesh: { dp: 1, fsdp: 1, sp: 1 }, optimizer: "muon", params: QWEN25_05B },
};

const load = (f: string) => loadConfig(join(dir, f), { checkPaths: false });

/** The model config as models/ reads it (vocab_size is given inline in these files). */
function decoderOf(c: JobConfig): DecoderConfig {
  const m = configFromHF({ ...c.model.config }, "test");
  assert.equal(m.family, "decoder");
  return m as DecoderConfig;
}

/** Parameters of a Qwen2 decoder with a tied head: q/k/v carry biases, o and the MLP none. */
function qwen2Params(m: DecoderConfig): number {
  const H = m.hiddenSize;
  const q = m.numHeads * m.headDim;
  const kv = m.numKvHeads * m.headDim;
  assert.deepEqual([m.qkvBias, m.oBias, m.mlpBias, m.qkNorm], [true, false, false, false]);
  const layer = H * q + q + 2 * (H * kv + kv) + q * H + 3 * H * m.intermediateSize + 2 * H;
  return m.vocabSize * H + m.numLayers * layer + H;
}

function inputPaths(c: JobConfig): string[] {
  const sources = [...c.data.sources, ...(c.data.eval?.sources ?? [])];
  return [...(c.model.path ? [c.model.path] : []), c.data.tokenizer, ...sources.map((s) => s.path)];
}

for (const [f, want] of Object.entries(EXAMPLES)) {
  test(`configs/${f}: validates, its mesh lays out over ${want.world} rank(s) and divides the heads`, () => {
    const c = load(f);
    assert.equal(c.device, "cuda");
    assert.equal(c.model.dtype, "bfloat16");
    assert.equal(c.optimizer.name, want.optimizer);
    const heads = c.model.config ? { numHeads: decoderOf(c).numHeads, numKvHeads: decoderOf(c).numKvHeads } : { numHeads: 14, numKvHeads: 2 };
    const mesh = new DeviceMesh(c.mesh, want.world, { ...heads, tokensPerRank: c.trainer.micro_batch_tokens });
    assert.deepEqual(mesh.shape, want.mesh);
    assert.equal(mesh.layouts().length, want.world);
    assert.ok(c.checkpoint.keep_last >= 1 && c.checkpoint.every > 0 && c.checkpoint.every <= c.trainer.max_steps);
    assert.ok(c.optimizer.schedule.warmup_steps > 0);
    if (c.trainer.eval_every > 0) assert.ok(c.data.eval, "evaluation needs eval data");
  });

  test(`configs/${f}: the header says how to run it and names every input the user supplies`, () => {
    const text = readFileSync(join(dir, f), "utf8");
    const header = text.slice(0, text.indexOf("\njob:"));
    assert.ok(header.split("\n").every((l) => l.startsWith("#")), "the file starts with a comment");
    const run = want.world > 1 ? `npx tessera launch --nproc-per-node ${want.world} configs/${f}` : `npx tessera train configs/${f}`;
    assert.ok(header.includes(run), `header shows: ${run}`);
    for (const p of inputPaths(load(f))) {
      const rel = relative(dir, p);
      assert.ok(header.includes(rel), `header names ${rel}`);
    }
  });

  if (want.params !== undefined) {
    test(`configs/${f}: the inline model has Qwen2.5's shapes (${want.params.toLocaleString("en")} parameters)`, () => {
      const m = decoderOf(load(f));
      assert.equal(m.tieWordEmbeddings, true);
      assert.equal(m.vocabSize, 151_936);
      assert.equal(m.ropeTheta, 1e6);
      assert.equal(qwen2Params(m), want.params);
    });
  }
}

test("configs/qwen2_5-0_5b-sft.yaml: SFT of the downloaded instruct model on packed chats, cosine AdamW", () => {
  const c = load("qwen2_5-0_5b-sft.yaml");
  assert.match(c.model.path ?? "", /Qwen2\.5-0\.5B-Instruct$/);
  assert.equal(c.data.tokenizer, c.model.path, "the tokenizer (and chat template) come from the model folder");
  for (const s of [...c.data.sources, ...(c.data.eval?.sources ?? [])]) assert.equal(s.messages_field, "messages");
  assert.equal(c.optimizer.schedule.name, "cosine");
  assert.ok(c.optimizer.lr <= 1e-4, "fine-tuning lr");
});

test("configs/qwen2_5-1_5b-fsdp8.yaml: 8,192-token packs, gradient accumulation, periodic checkpoints", () => {
  const c = load("qwen2_5-1_5b-fsdp8.yaml");
  assert.equal(c.data.packing_length, 8192);
  assert.ok(c.trainer.grad_accum > 1);
  assert.ok(c.checkpoint.keep_last > 1);
});

test("configs/qwen2_5-1_5b-ulysses2.yaml: 32,768-token packs within the positions; dp follows the world size", () => {
  const c = load("qwen2_5-1_5b-ulysses2.yaml");
  assert.equal(c.data.packing_length, 32_768);
  assert.ok(c.data.packing_length <= decoderOf(c).maxPositionEmbeddings);
  assert.deepEqual(new DeviceMesh(c.mesh, 16).shape, { dp: 2, fsdp: 4, sp: 2 });
  // Ulysses groups are consecutive ranks (one node): rank 5's partner is rank 4.
  assert.deepEqual(new DeviceMesh(c.mesh, 8).layout(5).spGroup, [4, 5]);
  assert.throws(() => new DeviceMesh(c.mesh, 6), /divisible/);
});
