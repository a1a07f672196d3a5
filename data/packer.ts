// Packing tokenized records into flat micro-batches of at most `length` tokens.
//
// Records gather in a window (the shuffle window); when it is full they are shuffled and
// packed together:
//   ffd       first-fit decreasing: longest first, each into the first batch with room;
//   best_fit  in shuffled order, each into the batch with the least room that still fits;
//   balanced  first-fit decreasing, then batches of similar load grouped together: the
//             batches one step hands to the data-parallel groups carry near-equal token
//             counts, so no rank waits on a fuller one.
// The least-filled batch (group, for balanced) of a window goes back into the window to be
// completed by later records, unless it is full or the data has ended. A record is never
// split: it is whole in one batch, or truncated (on_overlong: truncate) or dropped (drop) when
// it alone exceeds the budget. Batches leave in groups of `group` (one per batch group of a
// step); at the end of non-repeating data, records that fill no complete group are left out.
import { IGNORE_INDEX } from "./tokenizer.ts";
import { Rng } from "./rng.ts";
import type { PackedBatch, PackerState, PackingStrategy, TokenizedRecord } from "./types.ts";

export interface PackerOptions {
  length: number;
  strategy: PackingStrategy;
  window: number;
  group: number;
  onOverlong: "truncate" | "drop";
}

export type AddResult = "ok" | "truncated" | { dropped: string };

export class Packer {
  private buffer: TokenizedRecord[];
  private queue: PackedBatch[];
  private readonly rng: Rng;

  constructor(
    private readonly o: PackerOptions,
    seed: number,
    state?: PackerState,
  ) {
    this.buffer = state ? [...state.buffer] : [];
    this.queue = state ? [...state.queue] : [];
    this.rng = new Rng(state ? state.rng : seed);
  }

  state(): PackerState {
    return { buffer: [...this.buffer], queue: [...this.queue], rng: this.rng.state };
  }

  /** Takes a record into the window; packs the window when it is full. */
  add(rec: TokenizedRecord): AddResult {
    let result: AddResult = "ok";
    if (rec.tokens.length > this.o.length) {
      if (this.o.onOverlong === "drop") {
        return { dropped: `${rec.tokens.length} tokens, longer than packing_length ${this.o.length} (on_overlong: drop)` };
      }
      const labels = rec.labels.slice(0, this.o.length);
      labels[labels.length - 1] = IGNORE_INDEX;
      if (!labels.some((x) => x !== IGNORE_INDEX)) {
        return { dropped: `no loss tokens within the first ${this.o.length} tokens (packing_length) of ${rec.tokens.length}` };
      }
      rec = { tokens: rec.tokens.slice(0, this.o.length), labels, where: rec.where };
      result = "truncated";
    }
    this.buffer.push(rec);
    if (this.buffer.length >= this.o.window) this.pack(false);
    return result;
  }

  /** The next `group` batches, or null while fewer are ready. */
  take(): PackedBatch[] | null {
    if (this.queue.length < this.o.group) return null;
    return this.queue.splice(0, this.o.group);
  }

  /** At the end of the data: packs what is left. Returns the number of records in a last
   *  incomplete group, which cannot be handed out (every batch group needs a batch). */
  finish(): number {
    const unplaced = this.buffer.length ? this.pack(true) : 0;
    const rest = this.queue.length % this.o.group;
    const tail = this.queue.splice(this.queue.length - rest, rest);
    return unplaced + tail.reduce((a, b) => a + b.cu_seqlens.length - 1, 0);
  }

  /** Returns the records that fit no complete group at the end of the data. */
  private pack(final: boolean): number {
    const recs = this.rng.shuffle(this.buffer);
    this.buffer = [];
    let bins: TokenizedRecord[][];
    let unit = 1; // batches that stay together as one group
    if (this.o.strategy === "balanced") {
      bins = this.balanced(recs);
      unit = this.o.group;
    } else if (this.o.strategy === "best_fit") {
      bins = bestFit(recs, this.o.length);
    } else {
      bins = firstFitDecreasing(recs, this.o.length);
    }
    let units: TokenizedRecord[][][] = [];
    for (let i = 0; i < bins.length; i += unit) units.push(bins.slice(i, i + unit));
    if (!final && units.length > 0) {
      // the emptiest unit waits for more records, unless it is full
      let worst = 0;
      units.forEach((u, i) => {
        if (load(u) < load(units[worst]!)) worst = i;
      });
      if (load(units[worst]!) < this.o.length * unit) {
        this.buffer = units[worst]!.flat();
        units.splice(worst, 1);
      }
    }
    // a balanced group with an empty batch (fewer records than batches) is not handed out
    const partial = units.filter((u) => u.some((b) => b.length === 0));
    units = units.filter((u) => !partial.includes(u));
    const unplaced = partial.flat(2);
    if (!final) this.buffer.push(...unplaced);
    for (const u of this.rng.shuffle(units)) for (const b of u) this.queue.push(toBatch(b));
    return final ? unplaced.length : 0;
  }

  private balanced(recs: TokenizedRecord[]): TokenizedRecord[][] {
    const bins = firstFitDecreasing(recs, this.o.length);
    const tokens = bins.map((b) => b.reduce((a, r) => a + r.tokens.length, 0));
    // similar loads side by side, so each group of `group` batches is balanced
    const order = bins.map((_, i) => i).sort((a, b) => tokens[b]! - tokens[a]! || a - b);
    const sorted = order.map((i) => bins[i]!);
    while (sorted.length % this.o.group) sorted.push([]);
    return sorted;
  }
}

function load(bins: TokenizedRecord[][]): number {
  let n = 0;
  for (const b of bins) for (const r of b) n += r.tokens.length;
  return n;
}

function sortDecreasing(recs: TokenizedRecord[]): TokenizedRecord[] {
  return recs
    .map((r, i) => [r, i] as const)
    .sort((a, b) => b[0].tokens.length - a[0].tokens.length || a[1] - b[1])
    .map(([r]) => r);
}

function firstFitDecreasing(recs: TokenizedRecord[], L: number): TokenizedRecord[][] {
  const bins: TokenizedRecord[][] = [];
  const room: number[] = [];
  for (const r of sortDecreasing(recs)) {
    const n = r.tokens.length;
    let i = room.findIndex((x) => x >= n);
    if (i < 0) {
      i = bins.push([]) - 1;
      room.push(L);
    }
    bins[i]!.push(r);
    room[i]! -= n;
  }
  return bins;
}

function bestFit(recs: TokenizedRecord[], L: number): TokenizedRecord[][] {
  const bins: TokenizedRecord[][] = [];
  const room: number[] = [];
  for (const r of recs) {
    const n = r.tokens.length;
    let best = -1;
    for (let i = 0; i < room.length; i++) if (room[i]! >= n && (best < 0 || room[i]! < room[best]!)) best = i;
    if (best < 0) {
      best = bins.push([]) - 1;
      room.push(L);
    }
    bins[best]!.push(r);
    room[best]! -= n;
  }
  return bins;
}

/** Concatenates records into one flat batch. */
function toBatch(recs: TokenizedRecord[]): PackedBatch {
  const T = recs.reduce((a, r) => a + r.tokens.length, 0);
  const tokens = new Int32Array(T);
  const labels = new Int32Array(T);
  const positions = new Int32Array(T);
  const cu = new Int32Array(recs.length + 1);
  let at = 0;
  recs.forEach((r, k) => {
    tokens.set(r.tokens, at);
    labels.set(r.labels, at);
    for (let i = 0; i < r.tokens.length; i++) positions[at + i] = i;
    at += r.tokens.length;
    cu[k + 1] = at;
  });
  return { tokens, positions, cu_seqlens: cu, labels };
}
