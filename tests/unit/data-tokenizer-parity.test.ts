// Tessera's tokenizer against the reference: token ids made by transformers on the GPU machine
// (tests/fixtures/tokenizer/make_fixture.py writes expected.json). Skipped until that file exists.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { TesseraTokenizer, type ChatMessage } from "../../data/index.ts";
import { QWEN3 } from "../fixtures/data/make.ts";

const expectedPath = new URL("../fixtures/tokenizer/expected.json", import.meta.url).pathname;
const missing = existsSync(expectedPath)
  ? false
  : "tests/fixtures/tokenizer/expected.json is missing: run `python tests/fixtures/tokenizer/make_fixture.py` (transformers) on the GPU machine and commit it";

interface Expected {
  eos_token_id: number;
  texts: { text: string; ids: number[] }[];
  chat: { messages: ChatMessage[]; rendered: string; ids: number[]; assistant_masks: number[] | null };
}

test("Qwen3 tokenizer: ids of texts (ASCII, Unicode, CJK, emoji, code, whitespace) equal transformers'", { skip: missing }, () => {
  const expected = JSON.parse(readFileSync(expectedPath, "utf8")) as Expected;
  const tok = TesseraTokenizer.load(QWEN3);
  assert.equal(tok.eosId, expected.eos_token_id);
  for (const { text, ids } of expected.texts) assert.deepEqual(tok.encode(text), ids, JSON.stringify(text));
});

test("Qwen3 chat template: rendered text and ids equal transformers' apply_chat_template", { skip: missing }, () => {
  const expected = JSON.parse(readFileSync(expectedPath, "utf8")) as Expected;
  const tok = TesseraTokenizer.load(QWEN3);
  const { messages, rendered, ids, assistant_masks } = expected.chat;
  assert.equal(tok.renderChat(messages), rendered);
  const enc = tok.encodeChat(messages);
  assert.deepEqual(enc.ids, ids);
  if (assistant_masks) assert.deepEqual(Array.from(enc.mask), assistant_masks);
});
