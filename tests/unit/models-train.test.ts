import { test } from "node:test";
import assert from "node:assert/strict";
import { createModel, packSequences, type CausalLM, type PackedBatch } from "../../models/index.ts";
import { addInto } from "../../native/index.ts";
import { tinyBatch, tinyConfigs, values } from "./models-testkit.ts";

function sgdStep(m: CausalLM, lr: number): void {
  for (const p of m.params()) addInto(p.value, p.grad!, -lr);
  m.zeroGrad();
}

for (const [family, config] of Object.entries(tinyConfigs)) {
  test(`${family}: SGD steps on a packed batch lower the loss`, () => {
    const m = createModel(config, { seed: 11 });
    const batch = tinyBatch();
    const losses: number[] = [];
    for (let i = 0; i < 8; i++) {
      losses.push(m.loss(batch).loss);
      sgdStep(m, 0.5);
    }
    const final = m.evalLoss(batch).loss;
    assert.ok(final < losses[0]! * 0.8, `loss ${losses.map((l) => l.toFixed(3)).join(" -> ")} -> ${final.toFixed(3)}`);
    m.dispose();
  });
}

/** Splits a packed batch at a sequence boundary. */
function split(b: PackedBatch, seqs: number): [PackedBatch, PackedBatch] {
  const cut = b.cuSeqlens[seqs]!;
  const part = (lo: number, hi: number, cu: Int32Array): PackedBatch => ({
    tokens: b.tokens.slice(lo, hi),
    positions: b.positions.slice(lo, hi),
    labels: b.labels!.slice(lo, hi),
    cuSeqlens: cu.map((x) => x - lo),
  });
  return [part(0, cut, b.cuSeqlens.slice(0, seqs + 1)), part(cut, b.tokens.length, b.cuSeqlens.slice(seqs))];
}

test("gradient accumulation: micro-batches with gradScale = 1/total count give the whole batch's gradients", () => {
  for (const family of ["llama", "gpt2"]) {
    const m = createModel(tinyConfigs[family]!, { seed: 2, dtype: "float64" });
    const whole = tinyBatch();
    const r = m.loss(whole);
    const ref = m.params().map((p) => values(p.grad!));
    m.zeroGrad();
    const [a, b] = split(whole, 1);
    const total = r.count;
    const ra = m.loss(a, { gradScale: 1 / total });
    const rb = m.loss(b, { gradScale: 1 / total });
    assert.equal(ra.count + rb.count, total);
    assert.ok(Math.abs((ra.lossSum + rb.lossSum) / total - r.loss) < 1e-12);
    m.params().forEach((p, k) => {
      const g = values(p.grad!);
      g.forEach((x, i) => assert.ok(Math.abs(x - ref[k]![i]!) < 1e-12, `${family} ${p.name}[${i}]`));
    });
    m.dispose();
  }
});

test("a batch with a bad token, label, position or cu_seqlens is refused with what is wrong", () => {
  const m = createModel(tinyConfigs.gpt2!, { seed: 1 });
  const b = tinyBatch();
  assert.throws(() => m.loss({ ...b, tokens: b.tokens.map((t, i) => (i === 3 ? 999 : t)) }), /token 999 at 3 is outside the vocabulary of 40/);
  assert.throws(() => m.loss({ ...b, labels: b.labels!.map((t, i) => (i === 2 ? -5 : t)) }), /label -5 at 2/);
  assert.throws(() => m.loss({ ...b, positions: b.positions.map((t, i) => (i === 1 ? 32 : t)) }), /position 32 at 1 is outside \[0, 32\)/);
  assert.throws(() => m.loss({ ...b, cuSeqlens: Int32Array.from([0, 5]) }), /cu_seqlens must run from 0 to 16/);
  assert.throws(() => m.loss({ ...b, labels: undefined }), /no labels/);
  m.dispose();
});

test("step hooks run around every block in order: forward 0..N-1, backward N-1..0, outer first and last", () => {
  const m = createModel(tinyConfigs.mistral!, { seed: 1 });
  const events: string[] = [];
  const rec = (what: string) => (b: number | "outer") => events.push(`${what}:${b}`);
  m.loss(tinyBatch(), { hooks: { preForward: rec("f"), preBackward: rec("b"), postBackward: rec("B") } });
  assert.deepEqual(events, ["f:outer", "f:0", "f:1", "b:1", "B:1", "b:0", "B:0", "b:outer", "B:outer"]);
  m.dispose();
});

test("packSequences lays sequences end to end with positions from 0 and next-token labels", () => {
  const b = packSequences([
    [1, 2, 3],
    [4, 5],
  ]);
  assert.deepEqual(Array.from(b.tokens), [1, 2, 3, 4, 5]);
  assert.deepEqual(Array.from(b.positions), [0, 1, 2, 0, 1]);
  assert.deepEqual(Array.from(b.cuSeqlens), [0, 3, 5]);
  assert.deepEqual(Array.from(b.labels!), [2, 3, -100, 5, -100]);
});
