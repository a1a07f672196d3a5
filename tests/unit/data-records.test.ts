import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { DataError, DataPipeline, previewBatches, previewJson, toRecord, type BadRecord } from "../../data/index.ts";
import { baseOptions, chat, take, tempDir, text, writeJsonl } from "../fixtures/data/make.ts";

test("records: text and chat rows, field names, and reasons for what is not a record", () => {
  assert.deepEqual(toRecord({ text: "hi" }, {}), { record: { kind: "text", text: "hi" } });
  assert.deepEqual(toRecord({ body: "hi" }, { text_field: "body" }), { record: { kind: "text", text: "hi" } });
  const conv = toRecord({ conv: JSON.stringify(chat(1)) }, { messages_field: "conv" });
  assert.ok("record" in conv && conv.record.kind === "chat" && conv.record.messages.length === 3, "messages as JSON text (CSV)");
  const reasons = [
    [[1, 2], {}, "expected an object, got a list"],
    [{ other: 1 }, {}, "missing field 'text' (or 'messages')"],
    [{ text: 5 }, {}, "field 'text' must be a string, got a number"],
    [{ text: "" }, {}, "field 'text' is empty"],
    [{ messages: [] }, {}, "empty conversation"],
    [{ messages: "nope" }, {}, "field 'messages' is a string that is not JSON"],
    [{ messages: [{ role: "robot", content: "x" }] }, {}, 'message 0 has role "robot" (expected system, user, assistant or tool)'],
    [{ messages: [{ role: "user", content: 3 }] }, {}, "message 0 (user): content must be a string or a list of parts, got a number"],
    [{ messages: [{ role: "user", content: "only a question" }] }, {}, "conversation has no assistant message: nothing to learn"],
    [{ text: "x" }, { messages_field: "m" }, "missing field 'm'"],
  ] as const;
  for (const [value, spec, reason] of reasons) assert.deepEqual(toRecord(value, spec), { error: reason }, JSON.stringify(value));
});

function writeBad(dir: string): string {
  const path = join(dir, "bad.jsonl");
  writeJsonl(path, [
    { text: text(0) }, // line 1
    "{not json", // 2
    { text: text(1) }, // 3
    { title: "no text" }, // 4
    { text: 42 }, // 5
    { messages: [] }, // 6
    { text: "long ".repeat(400) }, // 7: longer than the budget
    { messages: chat(2) }, // 8
  ]);
  return path;
}

test("bad records under skip: each reported with file and line, counted, and training goes on", async (t) => {
  const path = writeBad(tempDir(t));
  const seen: BadRecord[] = [];
  const p = await DataPipeline.open(baseOptions({ path, repeat: false, onOverlong: "drop", packingLength: 128 }), { onBadRecord: (b) => seen.push(b) });
  const batches = await take(p, 100);
  await p.close();
  const s = p.stats();
  const want = [
    [2, /^malformed JSON/],
    [4, /^missing field 'text'/],
    [5, /^field 'text' must be a string/],
    [6, /^empty conversation$/],
    [7, /tokens, longer than packing_length 128 \(on_overlong: drop\)/],
  ] as const;
  assert.equal(s.bad, want.length);
  assert.equal(s.records, 8);
  assert.equal(s.dropped, 1);
  assert.deepEqual(seen, s.bad_records);
  want.forEach(([line, re], k) => {
    assert.equal(s.bad_records[k]!.file, path);
    assert.equal(s.bad_records[k]!.line, line);
    assert.match(s.bad_records[k]!.reason, re);
  });
  const seqs = batches.reduce((a, b) => a + b.cu_seqlens.length - 1, 0);
  assert.equal(seqs, 3, "the three good records are trained on");
});

test("bad records under fail: the first one stops the pipeline with its file and line", async (t) => {
  const path = writeBad(tempDir(t));
  const p = await DataPipeline.open(baseOptions({ path, repeat: false, onBadRecord: "fail" }));
  await assert.rejects(take(p, 100), (e: Error) => e instanceof DataError && e.message.startsWith(`bad record at ${path}:2: malformed JSON`) && /on_bad_record: fail/.test(e.message));
  await p.close();
});

test("repeating data with no usable record stops with a message instead of reading forever", async (t) => {
  const path = join(tempDir(t), "allbad.jsonl");
  writeJsonl(path, [{ title: "a" }, { title: "b" }, "{nope"]);
  const p = await DataPipeline.open(baseOptions({ path }));
  await assert.rejects(p.next(), (e: Error) => e instanceof DataError && /no usable record in a whole pass over the data/.test(e.message) && e.message.includes(path));
  await p.close();
});

test("an over-long record is truncated under truncate, and counted", async (t) => {
  const path = join(tempDir(t), "long.jsonl");
  writeJsonl(path, [{ text: "long ".repeat(400) }, { text: "short" }]);
  const p = await DataPipeline.open(baseOptions({ path, repeat: false, packingLength: 64, onOverlong: "truncate" }));
  const batches = await take(p, 10);
  await p.close();
  assert.equal(p.stats().truncated, 1);
  const lens = batches.flatMap((b) => Array.from(b.cu_seqlens.subarray(1), (e, k) => e - b.cu_seqlens[k]!));
  assert.ok(lens.includes(64), `a truncated sequence of the full budget: ${lens}`);
});

test("previewBatches: decoded batches with loss spans marked, and the stats (--json form)", async (t) => {
  const dir = tempDir(t);
  const path = writeBad(dir);
  const p = await previewBatches(baseOptions({ path, packingLength: 128, onOverlong: "drop" }), 2);
  assert.ok(p.batches.length >= 1);
  const texts = p.batches.flatMap((b) => b.sequences.map((s) => s.text));
  const chatText = texts.find((x) => x.includes("<|im_start|>"))!;
  assert.ok(chatText.includes("[[<think>\n\n</think>\n\nIt is 4. Indeed Indeed Indeed<|im_end|>]]"), chatText);
  assert.ok(!/\[\[[^\]]*Question/.test(chatText), "user text is not marked");
  const j = previewJson(p);
  assert.equal(j.records, 8);
  assert.equal(j.tokens, p.stats.tokens);
  assert.ok(typeof j.fill === "number" && (j.fill as number) > 0 && (j.fill as number) <= 1);
  assert.deepEqual((j.bad_records as { line: number }[]).map((b) => b.line), [2, 4, 5, 6, 7]);
  assert.ok((j.bad_records as { file: string; reason: string }[]).every((b) => b.file === path && b.reason.length > 0));
  JSON.stringify(j); // one JSON object
});

test("a dataset YAML mixes sources by weight, deterministically for a seed", async (t) => {
  const dir = tempDir(t);
  writeJsonl(join(dir, "a.jsonl"), Array.from({ length: 400 }, (_, i) => ({ text: `A ${i}` })));
  writeJsonl(join(dir, "b.jsonl"), Array.from({ length: 400 }, (_, i) => ({ body: `B ${i}` })));
  writeFileSync(join(dir, "mix.yaml"), "sources:\n  - path: a.jsonl\n    weight: 3\n  - path: b.jsonl\n    text_field: body\n    weight: 1\n");
  const run = async (seed: number) => {
    const p = await DataPipeline.open(baseOptions({ dataset: join(dir, "mix.yaml"), seed, packingLength: 64, shuffleWindow: 1 }));
    const bs = await take(p, 60);
    await p.close();
    return bs;
  };
  const a = await run(1);
  assert.deepEqual(await run(1), a, "same seed, same batches");
  assert.notDeepEqual(await run(2), a, "another seed, another order");
  const { TesseraTokenizer } = await import("../../data/index.ts");
  const tok = TesseraTokenizer.load(baseOptions({}).tokenizer);
  const firsts = a.flatMap((b) => Array.from(b.cu_seqlens.subarray(0, -1), (s) => tok.decode([b.tokens[s]!])));
  const share = firsts.filter((x) => x === "A").length / firsts.length;
  assert.ok(share > 0.65 && share < 0.85, `share of source A ${share} (weight 3:1)`);
});
