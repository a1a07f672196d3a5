// Every example job config in configs/ validates, input files included.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../../runtime/config/index.ts";

const dir = join(import.meta.dirname, "..", "..", "configs");
const files = readdirSync(dir).filter((f) => f.endsWith(".yaml"));
// The Qwen2.5 examples name inputs a user supplies (a downloaded model, their data), so their
// paths are not checked; config-examples-realistic.test.ts checks the rest of them. The GPU
// ones (-gpu) run as they are on this repository's data, so theirs are.
const userSupplied = (f: string) => f.startsWith("qwen2_5-") && !f.endsWith("-gpu.yaml");

test("configs/ holds example configs", () => {
  assert.ok(files.includes("tiny.yaml"), `configs/ has ${files.join(", ")}`);
});

for (const f of files) {
  test(`configs/${f} validates`, () => {
    const c = loadConfig(join(dir, f), { checkPaths: !userSupplied(f) });
    assert.equal(c.job, f.replace(/\.yaml$/, ""), "an example's job is named after its file");
  });
}

test("configs/tiny.yaml is the tiny CPU Qwen2-style model", () => {
  const c = loadConfig(join(dir, "tiny.yaml"));
  assert.equal(c.device, "cpu");
  assert.deepEqual(c.mesh, { dp: 1, fsdp: 1, sp: 1 });
  assert.equal(c.optimizer.name, "adamw");
  assert.equal(c.output_dir, "runs/tiny");
  assert.deepEqual(
    [c.model.config?.model_type, c.model.config?.hidden_size, c.model.config?.num_hidden_layers, c.model.config?.num_attention_heads],
    ["qwen2", 64, 2, 4],
  );
  assert.equal(c.model.config?.num_key_value_heads, 2);
  assert.equal(c.model.config?.intermediate_size, 128);
  assert.equal(c.model.config?.tie_word_embeddings, true);
  assert.equal(c.model.config?.vocab_size, undefined, "vocab size comes from the tokenizer");
  assert.ok(c.trainer.max_steps >= 20 && c.trainer.max_steps <= 100);
});
