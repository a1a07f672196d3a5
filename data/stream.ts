// The record stream: sources mixed by weight (a seeded draw per record, so the order is
// deterministic), each row turned into a record or a bad-record reason. Every item carries the
// cursor just after it: reopening at that cursor continues with the next item exactly.
import { DataError } from "./errors.ts";
import { toRecord } from "./records.ts";
import { Rng } from "./rng.ts";
import { readSource, type ResolvedSource, type SourceItem } from "./sources/index.ts";
import type { DataRecord, RecordLocation, SourceCursor, StreamCursor } from "./types.ts";

export interface StreamItem {
  record?: DataRecord;
  error?: string;
  where: RecordLocation;
  cursor: StreamCursor;
}

export function initialCursor(sourceCount: number, rngState: number): StreamCursor {
  return {
    sources: Array.from({ length: sourceCount }, () => ({ position: { file: 0, offset: 0, row: 0 }, epoch: 0, done: false })),
    rng: rngState,
  };
}

function copyCursor(c: StreamCursor): StreamCursor {
  return { rng: c.rng, sources: c.sources.map((s) => ({ ...s, position: { ...s.position } })) };
}

export async function* recordStream(
  sources: ResolvedSource[],
  from: StreamCursor,
  repeat: boolean,
): AsyncGenerator<StreamItem> {
  if (from.sources.length !== sources.length) {
    throw new DataError(`saved data state has ${from.sources.length} sources, the config ${sources.length}`);
  }
  const cursor = copyCursor(from);
  const rng = new Rng(cursor.rng);
  const weights = sources.map((s) => s.spec.weight ?? 1);
  weights.forEach((w, i) => {
    if (!(w >= 0) || !Number.isFinite(w)) throw new DataError(`source ${sources[i]!.spec.path}: weight must be >= 0`);
  });
  const open: (AsyncGenerator<SourceItem> | undefined)[] = sources.map(() => undefined);
  const fresh: boolean[] = sources.map(() => false);
  try {
    for (;;) {
      const active = cursor.sources.map((s, i) => (!s.done && weights[i]! > 0 ? i : -1)).filter((i) => i >= 0);
      if (active.length === 0) return;
      const total = active.reduce((a, i) => a + weights[i]!, 0);
      let u = rng.next() * total;
      let pick = active[active.length - 1]!;
      for (const i of active) {
        u -= weights[i]!;
        if (u < 0) {
          pick = i;
          break;
        }
      }
      const sc: SourceCursor = cursor.sources[pick]!;
      let got: IteratorResult<SourceItem> | undefined;
      for (;;) {
        if (!open[pick]) {
          fresh[pick] = sc.position.file === 0 && sc.position.offset === 0 && sc.position.row === 0;
          open[pick] = readSource(sources[pick]!, sc.position);
        }
        got = await open[pick]!.next();
        if (!got.done) break;
        open[pick] = undefined;
        if (fresh[pick]) throw new DataError(`data source ${sources[pick]!.spec.path} has no rows`);
        sc.position = { file: 0, offset: 0, row: 0 };
        if (!repeat) {
          sc.done = true;
          break;
        }
        sc.epoch++;
      }
      if (got.done) continue;
      fresh[pick] = false;
      const item = got.value;
      sc.position = item.position;
      cursor.rng = rng.state;
      const out: StreamItem = { where: item.where, cursor: copyCursor(cursor) };
      if (item.error !== undefined) out.error = item.error;
      else {
        const r = toRecord(item.value, sources[pick]!.spec);
        if ("error" in r) out.error = r.error;
        else out.record = r.record;
      }
      yield out;
    }
  } finally {
    await Promise.all(open.map((g) => g?.return(undefined)));
  }
}
