import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { DataPipeline, decodeState, encodeState, stateFromJSON, stateToJSON, type DataOptions, type PackingStrategy } from "../../data/index.ts";
import { baseOptions, chat, take, tempDir, text, writeArrowChat, writeJsonl } from "../fixtures/data/make.ts";

/** Three formats mixed by weight, small enough that a run of N batches crosses epochs. */
function mixedSources(dir: string): DataOptions["sources"] {
  writeJsonl(join(dir, "a.jsonl"), Array.from({ length: 40 }, (_, i) => (i === 7 ? "{broken" : { text: text(i, i % 11) })));
  const q = (s: string) => `"${s.replaceAll('"', '""')}"`;
  writeFileSync(join(dir, "b.csv"), "body,conv\n" + Array.from({ length: 30 }, (_, i) => `${q(text(100 + i, 3))},${q(JSON.stringify(chat(i)))}\n`).join(""));
  writeArrowChat(join(dir, "c.arrow"), Array.from({ length: 25 }, (_, i) => 200 + i), "stream", 4);
  return [
    { path: join(dir, "a.jsonl"), weight: 2 },
    { path: join(dir, "b.csv"), messages_field: "conv", weight: 1 },
    { path: join(dir, "c.arrow"), weight: 1 },
  ];
}

const N = 14;

for (const [strategy, window, group] of [["ffd", 16, 1], ["best_fit", 5, 2], ["balanced", 12, 2]] as [PackingStrategy, number, number][]) {
  test(`resume (${strategy}): batches after a saved state equal an uninterrupted run's, bit for bit`, async (t) => {
    const opts = baseOptions({ sources: mixedSources(tempDir(t)), packingLength: 160, packingStrategy: strategy, shuffleWindow: window, shard: { index: group - 1, count: group } });
    const straight = await DataPipeline.open(opts);
    const reference = await take(straight, N);
    const endStats = straight.stats();
    await straight.close();
    assert.equal(reference.length, N);
    assert.ok(endStats.bad >= 1, "the broken line is counted");

    let held = 0;
    for (const k of [0, 3, 9]) {
      const first = await DataPipeline.open(opts);
      await take(first, k);
      const saved = first.state();
      held += saved.packer.buffer.length;
      await first.close();
      for (const [how, state] of [
        ["msgpack", decodeState(encodeState(saved))],
        ["json", stateFromJSON(JSON.parse(JSON.stringify(stateToJSON(saved))))],
      ] as const) {
        const resumed = await DataPipeline.open(opts, { state });
        const rest = await take(resumed, N - k);
        const stats = resumed.stats();
        await resumed.close();
        assert.deepEqual(rest, reference.slice(k), `resume at ${k} through ${how}`);
        assert.deepEqual(stats, endStats, `stats at ${k} through ${how}`);
      }
    }
    assert.ok(held > 0, "some saved states held records in the packer's window");
  });
}

test("resume with tokenizer workers equals the inline run", async (t) => {
  const opts = baseOptions({ sources: mixedSources(tempDir(t)), packingLength: 160, shuffleWindow: 16 });
  const straight = await DataPipeline.open(opts);
  const reference = await take(straight, 10);
  await straight.close();
  const first = await DataPipeline.open(opts);
  await take(first, 4);
  const state = first.state();
  await first.close();
  const resumed = await DataPipeline.open({ ...opts, workers: 2 }, { state });
  assert.deepEqual(await take(resumed, 6), reference.slice(4));
  await resumed.close();
});

test("a state from another set of sources or another budget is refused with a message", async (t) => {
  const dir = tempDir(t);
  const opts = baseOptions({ sources: mixedSources(dir), packingLength: 160 });
  const p = await DataPipeline.open(opts);
  await take(p, 1);
  const state = p.state();
  await p.close();
  await assert.rejects(DataPipeline.open({ ...opts, sources: opts.sources!.slice(0, 2) }, { state }), /saved data state has 3 sources, the config 2/);
  await assert.rejects(DataPipeline.open({ ...opts, packingLength: 200 }, { state }), /packed for packing_length 160, the config says 200/);
});
