// The data pipeline: sources ► records ► tokens (inline or in worker threads, order kept) ►
// packed batches, with its state at any point between batches.
//
// The state is taken at the packer: the cursor of the last record the packer took (every
// record carries the sources' positions and the mixer's RNG just after it), the packer's
// window and ready batches, and the counters. Records read or tokenized ahead are not in it:
// a resume reads them again. So a pipeline opened from a state yields exactly the batches
// the saved one would have yielded next.
import { describeLocation, DataError } from "./errors.ts";
import { sourceSpecs } from "./dataset.ts";
import { Packer } from "./packer.ts";
import { deriveSeed } from "./rng.ts";
import { resolveSource } from "./sources/index.ts";
import { initialCursor, recordStream, type StreamItem } from "./stream.ts";
import { startTokenizer, type RecordTokenizer, type TokenizeResult } from "./tokenize-pool.ts";
import type { BadRecord, DataOptions, DataState, DataStats, PackedBatch, RecordLocation, StreamCursor } from "./types.ts";

/** Records per tokenization request. */
const CHUNK = 64;

interface TokenizedItem {
  result?: TokenizeResult;
  error?: string;
  where: RecordLocation;
  cursor: StreamCursor;
}

export interface OpenOptions {
  /** Resume from this state (from `DataPipeline.state()`). */
  state?: DataState;
  /** Called for each bad record as it is found (before `on_bad_record: fail` throws). */
  onBadRecord?: (bad: BadRecord) => void;
}

function emptyStats(): DataStats {
  return {
    records: 0,
    bad: 0,
    bad_records: [],
    truncated: 0,
    dropped: 0,
    tail_records: 0,
    batches: 0,
    tokens: 0,
    loss_tokens: 0,
    fill: 0,
  };
}

async function* tokenizeOrdered(
  stream: AsyncGenerator<StreamItem>,
  tok: RecordTokenizer,
): AsyncGenerator<TokenizedItem> {
  const inflight: Promise<TokenizedItem[]>[] = [];
  const ahead = Math.max(2, tok.parallelism * 2);
  let ended = false;
  const process = async (items: StreamItem[]): Promise<TokenizedItem[]> => {
    const records = items.filter((it) => it.record).map((it) => it.record!);
    const results = records.length ? await tok.tokenize(records) : [];
    let k = 0;
    return items.map((it) =>
      it.record ? { result: results[k++]!, where: it.where, cursor: it.cursor } : { error: it.error!, where: it.where, cursor: it.cursor },
    );
  };
  try {
    for (;;) {
      while (!ended && inflight.length < ahead) {
        const items: StreamItem[] = [];
        while (items.length < CHUNK) {
          const r = await stream.next();
          if (r.done) {
            ended = true;
            break;
          }
          items.push(r.value);
        }
        if (items.length) {
          const p = process(items);
          p.catch(() => {}); // surfaced when awaited in order
          inflight.push(p);
        }
      }
      const next = inflight.shift();
      if (!next) return;
      yield* await next;
    }
  } finally {
    await stream.return(undefined);
  }
}

interface Settings {
  packingLength: number;
  onBadRecord: "skip" | "fail";
  badRecordListLimit: number;
  /** This consumer's batch group. */
  index: number;
  /** Per source: whether it is read at all (weight > 0). */
  weighted: boolean[];
  onBad: ((b: BadRecord) => void) | undefined;
}

export class DataPipeline {
  private cursor: StreamCursor;
  private statsNow: DataStats;
  private consumed: number;
  private ended = false;
  /** Each source's epoch at the last usable record: a whole pass without one is an error. */
  private lastGood: number[];
  private readonly items: AsyncGenerator<TokenizedItem>;

  private constructor(
    private readonly s: Settings,
    private readonly packer: Packer,
    private readonly tokenizer: RecordTokenizer,
    stream: AsyncGenerator<StreamItem>,
    start: StreamCursor,
    state: DataState | undefined,
  ) {
    this.cursor = start;
    this.lastGood = start.sources.map((c) => c.epoch);
    this.statsNow = state ? structuredClone(state.stats) : emptyStats();
    this.consumed = state?.consumed ?? 0;
    this.items = tokenizeOrdered(stream, tokenizer);
  }

  static async open(options: DataOptions, open: OpenOptions = {}): Promise<DataPipeline> {
    const L = options.packingLength;
    if (!Number.isInteger(L) || L < 2) throw new DataError(`packing_length must be an integer >= 2, got ${L}`);
    const shard = options.shard ?? { index: 0, count: 1 };
    if (!(shard.count >= 1 && shard.index >= 0 && shard.index < shard.count)) {
      throw new DataError(`batch group ${shard.index} of ${shard.count} does not exist`);
    }
    const sources = sourceSpecs(options).map(resolveSource);
    const seed = options.seed ?? 0;
    const state = open.state;
    if (state && state.version !== 1) throw new DataError(`unknown data state version ${String(state.version)}`);
    if (state && state.cursor.sources.length !== sources.length) {
      throw new DataError(`the saved data state has ${state.cursor.sources.length} sources, the config ${sources.length}`);
    }
    if (state && state.packingLength !== L) {
      throw new DataError(`the saved data state was packed for packing_length ${state.packingLength}, the config says ${L}`);
    }
    const start = state ? state.cursor : initialCursor(sources.length, deriveSeed(seed, 0));
    const stream = recordStream(sources, start, options.repeat ?? true);
    const packer = new Packer(
      {
        length: L,
        strategy: options.packingStrategy ?? "ffd",
        window: Math.max(1, options.shuffleWindow ?? 1024),
        group: shard.count,
        onOverlong: options.onOverlong ?? "truncate",
      },
      deriveSeed(seed, 1),
      state?.packer,
    );
    const tokenizer = await startTokenizer(options.tokenizer, options.workers ?? 0, options.multimodal ?? false);
    const settings: Settings = {
      packingLength: L,
      onBadRecord: options.onBadRecord ?? "skip",
      badRecordListLimit: options.badRecordListLimit ?? 100,
      index: shard.index,
      weighted: sources.map((src) => (src.spec.weight ?? 1) > 0),
      onBad: open.onBadRecord,
    };
    return new DataPipeline(settings, packer, tokenizer, stream, start, state);
  }

  /** The next step's batches, one per batch group; null at the end of non-repeating data. */
  async nextGroup(): Promise<PackedBatch[] | null> {
    for (;;) {
      const group = this.packer.take();
      if (group) {
        for (const b of group) this.count(b);
        return group;
      }
      if (this.ended) return null;
      const r = await this.items.next();
      if (r.done) {
        this.ended = true;
        this.statsNow.tail_records += this.packer.finish();
        continue;
      }
      this.consume(r.value);
    }
  }

  /** This consumer's batch of the next step (`shard.index` of each group). */
  async next(): Promise<PackedBatch | null> {
    const g = await this.nextGroup();
    return g ? g[this.s.index]! : null;
  }

  state(): DataState {
    return {
      version: 1,
      cursor: structuredClone(this.cursor),
      packer: this.packer.state(),
      stats: structuredClone(this.statsNow),
      consumed: this.consumed,
      packingLength: this.s.packingLength,
    };
  }

  stats(): DataStats {
    return structuredClone(this.statsNow);
  }

  async close(): Promise<void> {
    await this.items.return(undefined);
    await this.tokenizer.close();
  }

  private consume(item: TokenizedItem): void {
    this.cursor = item.cursor;
    this.consumed++;
    this.statsNow.records++;
    const reason = item.error ?? (item.result && "error" in item.result ? item.result.error : undefined);
    if (reason !== undefined) return this.bad(item);
    const { tokens, labels } = item.result as { tokens: Int32Array; labels: Int32Array };
    const added = this.packer.add({ tokens, labels, where: item.where });
    if (added === "truncated") this.statsNow.truncated++;
    else if (added !== "ok") {
      this.statsNow.dropped++;
      return this.bad(item, added.dropped);
    }
    this.lastGood = item.cursor.sources.map((s) => s.epoch);
  }

  private bad(item: TokenizedItem, reason = item.error ?? (item.result as { error: string }).error): void {
    const where = item.where;
    const b: BadRecord = { ...where, reason };
    this.statsNow.bad++;
    if (this.statsNow.bad_records.length < this.s.badRecordListLimit) this.statsNow.bad_records.push(b);
    this.s.onBad?.(b);
    if (this.s.onBadRecord === "fail") {
      throw new DataError(`bad record at ${describeLocation(where)}: ${reason} (on_bad_record: fail)`);
    }
    // repeating data whose every record is bad would otherwise be read forever
    const live = item.cursor.sources.filter((s, i) => !s.done && this.s.weighted[i]);
    const passes = item.cursor.sources.every((s, i) => s.done || !this.s.weighted[i] || s.epoch >= this.lastGood[i]! + 2);
    if (live.length > 0 && passes) {
      throw new DataError(`no usable record in a whole pass over the data (${this.statsNow.bad} bad records; the last at ${describeLocation(where)}: ${reason})`);
    }
  }

  private count(b: PackedBatch): void {
    const s = this.statsNow;
    s.batches++;
    s.tokens += b.tokens.length;
    for (const x of b.labels) if (x !== -100) s.loss_tokens++;
    s.fill = s.tokens / (s.batches * this.s.packingLength);
  }
}
