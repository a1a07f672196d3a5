// A look at what training will see: the first packed batches decoded, with the tokens that
// carry loss marked, and the pipeline's counters.
import { DataPipeline } from "./pipeline.ts";
import { TesseraTokenizer, IGNORE_INDEX } from "./tokenizer.ts";
import type { DataOptions, DataStats, PackedBatch } from "./types.ts";

export interface PreviewSequence {
  tokens: number;
  loss_tokens: number;
  /** Decoded text; spans whose tokens are loss targets are wrapped in the marks. */
  text: string;
}
export interface PreviewBatch {
  tokens: number;
  fill: number;
  sequences: PreviewSequence[];
}
export interface Preview {
  batches: PreviewBatch[];
  stats: DataStats;
}

/** `[[`…`]]` in plain text; ANSI green on a terminal. */
export interface Marks {
  open: string;
  close: string;
}
export const BRACKETS: Marks = { open: "[[", close: "]]" };
export const ANSI: Marks = { open: "\x1b[32m", close: "\x1b[0m" };

/** The first `n` batches of batch group 0, read once through (no repeat). */
export async function previewBatches(options: DataOptions, n: number, marks: Marks = BRACKETS): Promise<Preview> {
  const pipeline = await DataPipeline.open({ ...options, repeat: false, workers: 0, shard: undefined });
  const tok = TesseraTokenizer.load(options.tokenizer);
  const batches: PreviewBatch[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const b = await pipeline.next();
      if (!b) break;
      batches.push(describe(b, tok, options.packingLength, marks));
    }
  } finally {
    await pipeline.close();
  }
  return { batches, stats: pipeline.stats() };
}

function describe(b: PackedBatch, tok: TesseraTokenizer, L: number, marks: Marks): PreviewBatch {
  const sequences: PreviewSequence[] = [];
  for (let s = 0; s + 1 < b.cu_seqlens.length; s++) {
    const lo = b.cu_seqlens[s]!;
    const hi = b.cu_seqlens[s + 1]!;
    // token j is a target when position j-1 predicts it
    const target = (j: number): boolean => j > lo && b.labels[j - 1] !== IGNORE_INDEX;
    let text = "";
    let loss = 0;
    for (let j = lo; j < hi; ) {
      const t = target(j);
      let k = j;
      while (k < hi && target(k) === t) k++;
      const piece = tok.decode(b.tokens.subarray(j, k));
      text += t ? marks.open + piece + marks.close : piece;
      if (t) loss += k - j;
      j = k;
    }
    sequences.push({ tokens: hi - lo, loss_tokens: loss, text });
  }
  return { tokens: b.tokens.length, fill: b.tokens.length / L, sequences };
}

/** The `--json` form: one object. */
export function previewJson(p: Preview): Record<string, unknown> {
  return {
    records: p.stats.records,
    // columnar sources have rows (from 0) where text formats have lines (from 1)
    bad_records: p.stats.bad_records.map(({ file, line, row, reason }) =>
      row === undefined ? { file, line, reason } : { file, line: row, row, reason },
    ),
    bad: p.stats.bad,
    tokens: p.stats.tokens,
    loss_tokens: p.stats.loss_tokens,
    truncated: p.stats.truncated,
    dropped: p.stats.dropped,
    fill: p.stats.fill,
    batches: p.batches,
  };
}
