// Arrow IPC, stream or file format, read record batch by record batch (HF `save_to_disk`
// writes the stream format into its data-*.arrow files). Rows become plain JS values.
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { RecordBatchReader, Vector, type RecordBatch } from "apache-arrow";
import type { FilePosition, RawItem } from "./raw.ts";

const FILE_MAGIC = Buffer.from("ARROW1");

async function isFileFormat(path: string): Promise<boolean> {
  const fh = await open(path, "r");
  try {
    const head = Buffer.alloc(6);
    const { bytesRead } = await fh.read(head, 0, 6, 0);
    return bytesRead === 6 && head.equals(FILE_MAGIC);
  } finally {
    await fh.close();
  }
}

async function* batches(path: string): AsyncGenerator<RecordBatch> {
  if (await isFileFormat(path)) {
    const fh = await open(path, "r");
    try {
      const reader = await RecordBatchReader.from(fh);
      await reader.open();
      for await (const batch of reader) yield batch;
    } finally {
      await fh.close();
    }
  } else {
    const reader = await RecordBatchReader.from(createReadStream(path));
    for await (const batch of reader) yield batch;
  }
}

/** Arrow values as plain JSON-like values: structs as objects, lists as arrays, int64 as
 *  number (where safe). */
export function toPlain(v: unknown): unknown {
  if (v === null || v === undefined) return v ?? null;
  if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (v instanceof Vector) return Array.from(v, toPlain);
  if (typeof v === "object") {
    if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<number>);
    if (Array.isArray(v)) return v.map(toPlain);
    const o = (v as { toJSON?: () => unknown }).toJSON ? (v as { toJSON: () => object }).toJSON() : v;
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(o)) out[k] = toPlain(x);
    return out;
  }
  return v;
}

export async function* readArrow(path: string, from: FilePosition): AsyncGenerator<RawItem> {
  let row = 0;
  for await (const batch of batches(path)) {
    const n = batch.numRows;
    if (row + n <= from.row) {
      row += n;
      continue;
    }
    const names = batch.schema.fields.map((f) => f.name);
    const cols = names.map((name) => batch.getChild(name)!);
    for (let i = Math.max(0, from.row - row); i < n; i++) {
      const value: Record<string, unknown> = {};
      names.forEach((name, k) => (value[name] = toPlain(cols[k]!.get(i))));
      yield { value, where: { file: path, row: row + i }, next: { offset: 0, row: row + i + 1 } };
    }
    row += n;
  }
}
