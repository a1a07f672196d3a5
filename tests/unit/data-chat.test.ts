import { test } from "node:test";
import assert from "node:assert/strict";
import { symlinkSync, writeFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { DataPipeline, IGNORE_INDEX, TesseraTokenizer, toRecord, type ChatMessage, type DataRecord } from "../../data/index.ts";
import { QWEN3, baseOptions, chat, take, tempDir, text, writeJsonl } from "../fixtures/data/make.ts";

const tok = TesseraTokenizer.load(QWEN3);

function tokenize(r: DataRecord, multimodal = false, t = tok) {
  const out = t.tokenizeRecord(r, multimodal);
  if ("error" in out) throw new Error(out.error);
  return out;
}

/** The decoded runs of tokens that are loss targets (token j is one when labels[j-1] is set). */
function targetRuns(tokens: Int32Array, labels: Int32Array, t = tok): string[] {
  const runs: string[] = [];
  let cur: number[] = [];
  for (let j = 1; j <= tokens.length; j++) {
    const on = j < tokens.length && labels[j - 1] !== IGNORE_INDEX;
    if (on) {
      assert.equal(labels[j - 1], tokens[j], "a label is the next token");
      cur.push(tokens[j]!);
    } else if (cur.length) {
      runs.push(t.decode(cur));
      cur = [];
    }
  }
  return runs;
}

test("text: every next token is a label, EOS appended, -100 at the last position", () => {
  const { tokens, labels } = tokenize({ kind: "text", text: "Hello world, 中文 😀" });
  assert.equal(tokens[tokens.length - 1], tok.eosId);
  assert.deepEqual(Array.from(tokens.subarray(0, -1)), tok.encode("Hello world, 中文 😀"));
  assert.deepEqual(Array.from(labels.subarray(0, -1)), Array.from(tokens.subarray(1)));
  assert.equal(labels[labels.length - 1], IGNORE_INDEX);
});

test("chat (Qwen3 template, span search): loss only on assistant tokens, through the end-of-turn token", () => {
  const messages = [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Hi?" },
    { role: "assistant", content: "Hello! How can I help?" },
    { role: "user", content: "2+2?" },
    { role: "assistant", content: "4" },
  ] as ChatMessage[];
  const { tokens, labels } = tokenize({ kind: "chat", messages });
  assert.deepEqual(Array.from(tokens), tok.encode(tok.renderChat(messages)), "ids of the whole rendered chat");
  // Qwen3 renders the last assistant turn with an empty think block: it is the model's to say
  assert.deepEqual(targetRuns(tokens, labels), ["Hello! How can I help?<|im_end|>", "<think>\n\n</think>\n\n4<|im_end|>"]);
  assert.equal(labels[labels.length - 1], IGNORE_INDEX);
});

test("chat: reasoning in <think> is kept for the last turn and dropped by the template before; spans still found", () => {
  const messages = [
    { role: "user", content: "A?" },
    { role: "assistant", content: "<think>\nfirst thoughts\n</think>\n\nAnswer A." },
    { role: "user", content: "B?" },
    { role: "assistant", content: "<think>\nsecond thoughts\n</think>\n\nAnswer B." },
  ] as ChatMessage[];
  const { tokens, labels } = tokenize({ kind: "chat", messages });
  assert.deepEqual(targetRuns(tokens, labels), ["Answer A.<|im_end|>", "<think>\nsecond thoughts\n</think>\n\nAnswer B.<|im_end|>"]);
});

test("chat: an assistant turn with only tool calls (content null) is accepted", () => {
  const r = toRecord({ messages: [{ role: "user", content: "weather?" }, { role: "assistant", content: null, tool_calls: [{ type: "function", function: { name: "get_weather", arguments: { city: "Paris" } } }] }, { role: "tool", content: "sunny" }, { role: "assistant", content: "Sunny." }] }, {});
  assert.ok("record" in r, JSON.stringify(r));
  const { tokens, labels } = tokenize(r.record);
  const runs = targetRuns(tokens, labels);
  assert.equal(runs.length, 2);
  assert.match(runs[0]!, /^<tool_call>\n\{"name": "get_weather", "arguments": \{"city": "Paris"\}\}\n<\/tool_call><\|im_end\|>$/);
  assert.ok(runs[1]!.endsWith("Sunny.<|im_end|>"));
  assert.ok(!runs.join("").includes("sunny"), "the tool's answer is not trained on");
});

test("chat: text the normalizer changes (not NFC) falls back to span-by-span tokenization, labels aligned", () => {
  const messages = [
    { role: "user", content: "Cafe\u0301?" },
    { role: "assistant", content: "Un cafe\u0301, s'il vous plai\u0302t." },
  ] as ChatMessage[];
  const { tokens, labels } = tokenize({ kind: "chat", messages });
  assert.deepEqual(targetRuns(tokens, labels), ["<think>\n\n</think>\n\nUn café, s'il vous plaît.<|im_end|>"]);
});

test("chat: content as a list of text parts equals string content; media parts are bad for text-only models", () => {
  const asString = chat(3);
  const asParts = asString.map((m) => ({ ...m, content: [{ type: "text", text: m.content.slice(0, 5) }, { type: "text", text: m.content.slice(5) }] }));
  const a = toRecord({ messages: asString }, {});
  const b = toRecord({ messages: asParts }, {});
  assert.ok("record" in a && "record" in b);
  assert.deepEqual(tokenize(b.record), tokenize(a.record));
  const withImage = toRecord({ messages: [{ role: "user", content: [{ type: "image", url: "x.png" }, { type: "text", text: "what?" }] }, { role: "assistant", content: "a cat" }] }, {});
  assert.ok("record" in withImage);
  const msg = withImage.record.kind === "chat" ? withImage.record.messages[0]!.content : [];
  assert.deepEqual((msg as { type: string }[])[0], { type: "image", url: "x.png" }, "the image part is kept in the record");
  const r = tok.tokenizeRecord(withImage.record, false);
  assert.ok("error" in r && /image part.*text-only/.test(r.error), JSON.stringify(r));
});

function tokenizerWithTemplate(t: { after: (fn: () => void) => void }, template: string): TesseraTokenizer {
  const dir = tempDir(t);
  symlinkSync(join(QWEN3, "tokenizer.json"), join(dir, "tokenizer.json"));
  const config = JSON.parse(readFileSync(join(QWEN3, "tokenizer_config.json"), "utf8"));
  config.chat_template = template;
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(config));
  return TesseraTokenizer.load(dir);
}

test("chat: {% generation %} markers give the assistant spans when the template has them", (t) => {
  const template =
    "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' }}" +
    "{% if m.role == 'assistant' %}{% generation %}{{ m.content + '<|im_end|>' }}{% endgeneration %}" +
    "{% else %}{{ m.content + '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}";
  const marked = tokenizerWithTemplate(t, template);
  assert.ok(marked.hasGenerationMarkers);
  const messages = chat(5) as ChatMessage[];
  const rendered = marked.renderChat(messages);
  assert.ok(!/[\uE000\uE001]/.test(rendered), "markers do not leak into the text");
  const { tokens, labels } = tokenize({ kind: "chat", messages }, false, marked);
  assert.deepEqual(Array.from(tokens), marked.encode(rendered));
  assert.deepEqual(targetRuns(tokens, labels, marked), [messages[2]!.content + "<|im_end|>"]);
});

test("chat: multimodal models keep media parts for their template", (t) => {
  const template =
    "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' }}{% if m.content is string %}{{ m.content }}" +
    "{% else %}{% for p in m.content %}{% if p.type == 'text' %}{{ p.text }}{% else %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}{% endif %}{% endfor %}{% endif %}" +
    "{{ '<|im_end|>\\n' }}{% endfor %}";
  const vl = tokenizerWithTemplate(t, template);
  const r = toRecord({ messages: [{ role: "user", content: [{ type: "image", url: "x.png" }, { type: "text", text: "what?" }] }, { role: "assistant", content: "a cat" }] }, {});
  assert.ok("record" in r);
  const { tokens, labels } = tokenize(r.record, true, vl);
  assert.ok(Array.from(tokens).includes(vl.encode("<|image_pad|>")[0]!));
  assert.deepEqual(targetRuns(tokens, labels, vl), ["a cat<|im_end|>"]);
});

test("tokenization in worker threads yields the same batches as inline", async (t) => {
  const dir = tempDir(t);
  const path = join(dir, "mix.jsonl");
  writeJsonl(path, Array.from({ length: 300 }, (_, i) => (i % 3 ? { text: text(i, i % 17) } : { messages: chat(i, i % 9) })));
  const inline = await DataPipeline.open(baseOptions({ path, workers: 0, repeat: false }));
  const pooled = await DataPipeline.open(baseOptions({ path, workers: 2, repeat: false }));
  try {
    const a = await take(inline, 1000);
    const b = await take(pooled, 1000);
    assert.ok(a.length > 20);
    assert.deepEqual(b, a);
    assert.deepEqual(pooled.stats(), inline.stats());
  } finally {
    await inline.close();
    await pooled.close();
  }
});
