import { test } from "node:test";
import assert from "node:assert/strict";
import { createModel, generate, mulberry32, pick, type CausalLM } from "../../models/index.ts";
import { liveTensors } from "../../native/index.ts";
import { randomizeParams, tinyConfigs, values } from "./models-testkit.ts";

/** Greedy decoding by recomputing the whole sequence each step (no cache): the reference. */
function greedyByRecompute(m: CausalLM, prompt: number[], steps: number): { ids: number[]; logprobs: number[] } {
  const seq = [...prompt];
  const logprobs: number[] = [];
  for (let s = 0; s < steps; s++) {
    const T = seq.length;
    const t = m.logits({ tokens: Int32Array.from(seq), positions: Int32Array.from(seq, (_, i) => i), cuSeqlens: Int32Array.from([0, T]) });
    const all = values(t);
    t.dispose();
    const V = all.length / T;
    const last = all.subarray((T - 1) * V);
    let best = 0;
    for (let i = 1; i < V; i++) if (last[i]! > last[best]!) best = i;
    const max = last[best]!;
    const lse = max + Math.log(last.reduce((a, x) => a + Math.exp(x - max), 0));
    logprobs.push(last[best]! - lse);
    seq.push(best);
  }
  return { ids: seq.slice(prompt.length), logprobs };
}

for (const [family, config] of Object.entries(tinyConfigs)) {
  test(`${family}: cached greedy generation equals recomputing the whole sequence`, () => {
    const m = createModel(config, { seed: 4 });
    randomizeParams(m.params(), 17, 0.5);
    const prompt = [5, 9, 2, 30, 11];
    const before = liveTensors().count;
    const out = generate(m, prompt, { maxNewTokens: 10, eosTokenId: [] });
    assert.equal(liveTensors().count, before, "generation leaves no tensors behind");
    const ref = greedyByRecompute(m, prompt, 10);
    assert.deepEqual(out.outputIds, ref.ids);
    out.logprobs.forEach((lp, i) => assert.ok(Math.abs(lp - ref.logprobs[i]!) < 1e-4, `logprob ${i}: ${lp} vs ${ref.logprobs[i]}`));
    m.dispose();
  });
}

test("generation stops at eos and at the model's last position", () => {
  const m = createModel(tinyConfigs.gpt2!, { seed: 4 });
  randomizeParams(m.params(), 17, 0.5);
  const free = generate(m, [1, 2, 3], { maxNewTokens: 6, eosTokenId: [] });
  const stop = free.outputIds[2]!;
  const cut = generate(m, [1, 2, 3], { maxNewTokens: 6, eosTokenId: stop });
  assert.deepEqual(cut.outputIds, free.outputIds.slice(0, free.outputIds.indexOf(stop) + 1));
  // n_positions is 32: a 30-token prompt leaves room for 2 more positions, and 3 tokens come out (the last is never fed back).
  const long = generate(m, Array.from({ length: 30 }, (_, i) => i % 40), { maxNewTokens: 10, eosTokenId: [] });
  assert.equal(long.outputIds.length, 3);
  m.dispose();
});

test("sampling: seeded, top-k 1 is greedy, and frequencies follow softmax(logits / T) over the top k", () => {
  const m = createModel(tinyConfigs.qwen3!, { seed: 4 });
  randomizeParams(m.params(), 3, 0.5);
  const a = generate(m, [1, 2], { maxNewTokens: 8, temperature: 1.3, topP: 0.95, seed: 42, eosTokenId: [] });
  const b = generate(m, [1, 2], { maxNewTokens: 8, temperature: 1.3, topP: 0.95, seed: 42, eosTokenId: [] });
  assert.deepEqual(a, b);
  const greedy = generate(m, [1, 2], { maxNewTokens: 8, eosTokenId: [] });
  assert.deepEqual(generate(m, [1, 2], { maxNewTokens: 8, temperature: 2, topK: 1, seed: 1, eosTokenId: [] }).outputIds, greedy.outputIds);
  m.dispose();

  const logits = Float32Array.from([2, 1, 0.5, 0, -1, 3]);
  const rng = mulberry32(7);
  const counts = new Array<number>(6).fill(0);
  const N = 20000;
  for (let i = 0; i < N; i++) counts[pick(logits, { temperature: 0.8, topK: 3 }, rng)]!++;
  // top 3: ids 5 (3), 0 (2), 1 (1)
  const w = [3, 2, 1].map((x) => Math.exp(x / 0.8));
  const z = w.reduce((s, x) => s + x, 0);
  const expect = new Map([
    [5, w[0]! / z],
    [0, w[1]! / z],
    [1, w[2]! / z],
  ]);
  counts.forEach((c, id) => {
    const p = expect.get(id) ?? 0;
    // 5 standard deviations of a binomial count: fails only if pick is wrong.
    assert.ok(Math.abs(c - N * p) <= 5 * Math.sqrt(N * p * (1 - p)) + 1e-9, `token ${id}: ${c} draws, expected ~${(N * p).toFixed(0)}`);
  });
  // top-p 0.5 keeps only the most likely token here (p(5) ~ 0.71).
  for (let i = 0; i < 50; i++) assert.equal(pick(logits, { temperature: 0.8, topP: 0.5 }, rng), 5);
});
