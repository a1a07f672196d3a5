import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { csvRows, readSource, resolveSource, DataError, type SourceSpec } from "../../data/index.ts";
import { writeParquet } from "../fixtures/data/parquet-writer.ts";
import { chat, tempDir, writeArrowChat, writeJsonl } from "../fixtures/data/make.ts";

async function all(spec: SourceSpec, from = { file: 0, offset: 0, row: 0 }) {
  const out = [];
  for await (const it of readSource(resolveSource(spec), from)) out.push(it);
  return out;
}

/** Reading again from any item's position yields exactly the items after it. */
async function assertResumable(spec: SourceSpec, picks: number[]): Promise<void> {
  const items = await all(spec);
  for (const k of picks) {
    const rest = await all(spec, items[k]!.position);
    assert.deepEqual(
      rest.map((r) => [r.value, r.error, r.where]),
      items.slice(k + 1).map((r) => [r.value, r.error, r.where]),
      `resume after item ${k}`,
    );
  }
}

test("jsonl: records with their line numbers, blank lines skipped, malformed lines reported", async (t) => {
  const dir = tempDir(t);
  const path = join(dir, "a.jsonl");
  writeFileSync(path, '{"text":"a"}\r\n\n{"text":"b\\nc"}\n{oops\n{"text":"ü中😀"}');
  const items = await all({ path });
  assert.deepEqual(
    items.map((i) => [i.where.line, i.value ?? i.error?.slice(0, 14)]),
    [
      [1, { text: "a" }],
      [3, { text: "b\nc" }],
      [4, "malformed JSON"],
      [5, { text: "ü中😀" }],
    ],
  );
  await assertResumable({ path }, [0, 1, 2, 3]);
});

test("text formats stream across chunk boundaries with exact resume offsets (multi-MB files)", async (t) => {
  const dir = tempDir(t);
  // ~1.6 MB each: longer than one 1 MiB read chunk; multi-byte characters straddle chunk edges
  const rows = Array.from({ length: 3000 }, (_, i) => ({ text: `${i} ${"é中😀,\"q\"\n".repeat(40)}` }));
  writeJsonl(join(dir, "big.jsonl"), rows);
  writeFileSync(join(dir, "big.json"), "[\n" + rows.map((r) => JSON.stringify(r)).join(",\n") + "\n]\n");
  const q = (s: string) => `"${s.replaceAll('"', '""')}"`;
  writeFileSync(join(dir, "big.csv"), "text,n\r\n" + rows.map((r, i) => `${q(r.text)},${i}\r\n`).join(""));
  for (const name of ["big.jsonl", "big.json", "big.csv"]) {
    const items = await all({ path: join(dir, name) });
    assert.equal(items.length, rows.length, name);
    assert.deepEqual(items.map((i) => (i.value as { text: string }).text), rows.map((r) => r.text), name);
    await assertResumable({ path: join(dir, name) }, [0, 1499, 2998]);
  }
});

test("csv: RFC 4180 quoting, escaped quotes, newlines in fields, CRLF, empty fields", async (t) => {
  const dir = tempDir(t);
  const path = join(dir, "a.csv");
  writeFileSync(path, 'text,tag\r\n"Hello, ""world""",x\r\n"two\nlines",\r\nplain,"q"\n\n"",last\nno newline at end,z');
  const items = await all({ path });
  assert.deepEqual(
    items.map((i) => [i.where.line, i.value]),
    [
      [2, { text: 'Hello, "world"', tag: "x" }],
      [3, { text: "two\nlines", tag: "" }],
      [5, { text: "plain", tag: "q" }],
      [7, { text: "", tag: "last" }],
      [8, { text: "no newline at end", tag: "z" }],
    ],
  );
  await assertResumable({ path }, [0, 1, 2, 3]);
});

test("csv: malformed records are reported with their line and parsing goes on", async (t) => {
  const dir = tempDir(t);
  const path = join(dir, "bad.csv");
  writeFileSync(path, 'text,n\nok,1\n"a"b,2\nonly-one-field\nfine,3\n"unterminated,4\n');
  const items = await all({ path });
  assert.deepEqual(
    items.map((i) => [i.where.line, i.value ?? i.error]),
    [
      [2, { text: "ok", n: "1" }],
      [3, 'malformed CSV: unexpected character "b" after a closing quote'],
      [4, "malformed CSV: 1 fields where the header has 2"],
      [5, { text: "fine", n: "3" }],
      [6, "malformed CSV: unterminated quoted field at end of file"],
    ],
  );
});

test("a UTF-8 byte-order mark at the start of a text file is ignored", async (t) => {
  const dir = tempDir(t);
  const bom = "\uFEFF";
  writeFileSync(join(dir, "a.jsonl"), `${bom}{"text":"a"}\n`);
  writeFileSync(join(dir, "a.json"), `${bom}[{"text":"a"}]`);
  writeFileSync(join(dir, "a.csv"), `${bom}text\na\n`);
  for (const name of ["a.jsonl", "a.json", "a.csv"]) {
    assert.deepEqual((await all({ path: join(dir, name) })).map((i) => i.value), [{ text: "a" }], name);
  }
});

test("csv parser: rows as fields, a lone CR ends a record", async (t) => {
  const dir = tempDir(t);
  const path = join(dir, "cr.csv");
  writeFileSync(path, "a,b\rc,d\r\n");
  const rows = [];
  for await (const r of csvRows(path, { offset: 0, row: 0 })) rows.push(r.fields);
  assert.deepEqual(rows, [
    ["a", "b"],
    ["c", "d"],
  ]);
});

test("csv parser: with lone-CR line ends a bad row is skipped alone, and lines count CRs", async (t) => {
  const dir = tempDir(t);
  const path = join(dir, "cr-bad.csv");
  writeFileSync(path, 'text,x\r"a"b,1\r"ok",2\r\n"ok2",3\r');
  const rows: { line: number; fields?: string[]; error?: string }[] = [];
  for await (const r of csvRows(path, { offset: 0, row: 0 })) rows.push({ line: r.line, ...(r.fields ? { fields: r.fields } : {}), ...(r.error ? { error: r.error } : {}) });
  assert.equal(rows.length, 4);
  assert.deepEqual(rows[0], { line: 1, fields: ["text", "x"] });
  assert.equal(rows[1]!.line, 2);
  assert.match(rows[1]!.error ?? "", /after a closing quote/);
  assert.deepEqual(rows[2], { line: 3, fields: ["ok", "2"] });
  assert.deepEqual(rows[3], { line: 4, fields: ["ok2", "3"] });
});

test("json: one array streamed element by element; bad elements reported; non-arrays rejected", async (t) => {
  const dir = tempDir(t);
  const path = join(dir, "a.json");
  writeFileSync(path, '[\n {"text": "a]"},\n {"text": nope},\n {"text": "c", "x": [1, {"y": "}"}]}\n]\n');
  const items = await all({ path });
  assert.deepEqual(
    items.map((i) => [i.where.line, i.value ?? i.error?.slice(0, 22)]),
    [
      [2, { text: "a]" }],
      [3, "malformed JSON element"],
      [4, { text: "c", x: [1, { y: "}" }] }],
    ],
  );
  await assertResumable({ path }, [0, 1]);
  writeFileSync(join(dir, "obj.json"), '{"text": "x"}');
  await assert.rejects(all({ path: join(dir, "obj.json") }), /must hold one array/);
});

test("arrow: IPC stream and file formats, nested chat rows, resume by row across record batches", async (t) => {
  const dir = tempDir(t);
  const ids = Array.from({ length: 10 }, (_, i) => i);
  for (const format of ["stream", "file"] as const) {
    const path = join(dir, `${format}.arrow`);
    writeArrowChat(path, ids, format, 4);
    const items = await all({ path });
    assert.deepEqual(
      items.map((i) => i.value),
      ids.map((i) => ({ id: i, messages: chat(i) })),
    );
    assert.deepEqual(items[5]!.where, { file: path, row: 5 });
    await assertResumable({ path }, [0, 3, 4, 8]);
  }
});

test("arrow: HF save_to_disk folders (Dataset with several data files, DatasetDict with splits)", async (t) => {
  const dir = tempDir(t);
  const ds = join(dir, "dict", "train");
  mkdirSync(ds, { recursive: true });
  writeArrowChat(join(ds, "data-00000-of-00002.arrow"), [0, 1, 2], "stream");
  writeArrowChat(join(ds, "data-00001-of-00002.arrow"), [3, 4], "stream");
  writeFileSync(join(ds, "dataset_info.json"), "{}");
  writeFileSync(
    join(ds, "state.json"),
    JSON.stringify({ _data_files: [{ filename: "data-00000-of-00002.arrow" }, { filename: "data-00001-of-00002.arrow" }] }),
  );
  mkdirSync(join(dir, "dict", "test"));
  writeFileSync(join(dir, "dict", "dataset_dict.json"), JSON.stringify({ splits: ["train", "test"] }));
  const viaDict = await all({ path: join(dir, "dict") });
  const viaSplit = await all({ path: join(dir, "dict"), split: "train" });
  assert.deepEqual(viaDict.map((i) => (i.value as { id: number }).id), [0, 1, 2, 3, 4]);
  assert.deepEqual(viaSplit.map((i) => i.value), viaDict.map((i) => i.value));
  assert.equal(resolveSource({ path: join(dir, "dict") }).format, "arrow");
  await assertResumable({ path: ds }, [0, 2, 3]);
  assert.throws(() => resolveSource({ path: join(dir, "dict"), split: "validation" }), /splits \[train, test\]: set split/);
});

test("parquet: a committed file and a generated one read row by row, with resume", async (t) => {
  const committed = new URL("../fixtures/data/chat.parquet", import.meta.url).pathname;
  const items = await all({ path: committed });
  assert.equal(items.length, 3);
  assert.deepEqual(JSON.parse((items[1]!.value as { messages: string }).messages), chat(1));
  assert.equal((items[2]!.value as { id: number }).id, 2);

  const dir = tempDir(t);
  const path = join(dir, "t.parquet");
  const texts = ["héllo", "wörld 中文 😀", "", "last"];
  writeFileSync(path, writeParquet([
    { name: "text", type: "string", values: texts },
    { name: "n", type: "int32", values: [1, -2, 3, 4] },
  ]));
  const got = await all({ path });
  assert.deepEqual(got.map((i) => i.value), texts.map((text, k) => ({ text, n: [1, -2, 3, 4][k] })));
  assert.deepEqual(got[3]!.where, { file: path, row: 3 });
  await assertResumable({ path }, [0, 2]);
});

test("formats are inferred from extensions; unknown ones and missing paths are clear errors", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "x.txt"), "hi");
  assert.throws(() => resolveSource({ path: join(dir, "x.txt") }), (e: Error) => e instanceof DataError && /cannot infer the format/.test(e.message));
  assert.throws(() => resolveSource({ path: join(dir, "missing.jsonl") }), /not found/);
  writeFileSync(join(dir, "x.txt"), '{"text":"a"}\n');
  assert.equal((await all({ path: join(dir, "x.txt"), format: "jsonl" })).length, 1);
  const folder = join(dir, "shards");
  mkdirSync(folder);
  writeJsonl(join(folder, "train-0.jsonl"), [{ text: "a" }]);
  writeJsonl(join(folder, "train-1.jsonl"), [{ text: "b" }]);
  writeJsonl(join(folder, "test-0.jsonl"), [{ text: "c" }]);
  const train = await all({ path: folder, split: "train" });
  assert.deepEqual(train.map((i) => i.value), [{ text: "a" }, { text: "b" }]);
});
