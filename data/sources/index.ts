// Resolving a source spec to its files and format, and reading it row by row from a saved
// position across all its files.
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { basename, extname, join } from "node:path";
import { DataError } from "../errors.ts";
import type { SourceFormat, SourcePosition, SourceSpec } from "../types.ts";
import { readArrow } from "./arrow.ts";
import { readCsv } from "./csv.ts";
import { readJsonArray } from "./json.ts";
import { readJsonl } from "./jsonl.ts";
import { readParquet } from "./parquet.ts";
import type { FileReader, RawItem } from "./raw.ts";

export type { RawItem } from "./raw.ts";
export { csvRows } from "./csv.ts";

const readers: Record<SourceFormat, FileReader> = {
  jsonl: readJsonl,
  json: readJsonArray,
  csv: readCsv,
  arrow: readArrow,
  parquet: readParquet,
};

const byExtension: Record<string, SourceFormat> = {
  ".jsonl": "jsonl",
  ".ndjson": "jsonl",
  ".json": "json",
  ".csv": "csv",
  ".arrow": "arrow",
  ".ipc": "arrow",
  ".feather": "arrow",
  ".parquet": "parquet",
};

export function formatOf(path: string): SourceFormat | undefined {
  return byExtension[extname(path).toLowerCase()];
}

export interface ResolvedSource {
  spec: SourceSpec;
  format: SourceFormat;
  files: string[];
}

/** A file, an HF `save_to_disk` folder (Dataset or DatasetDict), or a folder of data files. */
export function resolveSource(spec: SourceSpec): ResolvedSource {
  const path = spec.path;
  if (!existsSync(path)) throw new DataError(`data source not found: ${path}`);
  if (!statSync(path).isDirectory()) {
    const format = spec.format ?? formatOf(path);
    if (!format) throw new DataError(`cannot infer the format of ${path}: set format (jsonl, json, csv, arrow, parquet)`);
    return { spec, format, files: [path] };
  }
  const dict = join(path, "dataset_dict.json");
  if (existsSync(dict)) {
    const splits = (JSON.parse(readFileSync(dict, "utf8")) as { splits?: string[] }).splits ?? [];
    const split = spec.split ?? (splits.includes("train") ? "train" : undefined);
    if (!split || !splits.includes(split)) {
      throw new DataError(`${path} is a DatasetDict with splits [${splits.join(", ")}]: set split`);
    }
    return resolveSource({ ...spec, path: join(path, split), split: undefined });
  }
  const state = join(path, "state.json");
  if (existsSync(state)) {
    const files = (JSON.parse(readFileSync(state, "utf8")) as { _data_files?: { filename: string }[] })._data_files;
    if (!files?.length) throw new DataError(`${state} lists no _data_files`);
    return { spec, format: "arrow", files: files.map((f) => join(path, f.filename)) };
  }
  const candidates = readdirSync(path)
    .filter((name) => !name.startsWith(".") && formatOf(name) && !name.endsWith("_info.json"))
    .filter((name) => !spec.split || basename(name).includes(spec.split))
    .sort();
  const formats = new Set(candidates.map((n) => spec.format ?? formatOf(n)));
  if (candidates.length === 0) throw new DataError(`no data files in ${path}`);
  if (formats.size > 1) throw new DataError(`${path} mixes formats (${[...formats].join(", ")}): set format`);
  return { spec, format: [...formats][0]!, files: candidates.map((n) => join(path, n)) };
}

export interface SourceItem extends RawItem {
  /** The source's position after this row. */
  position: SourcePosition;
}

/** Rows of one source from `from` to its end, across its files. */
export async function* readSource(src: ResolvedSource, from: SourcePosition): AsyncGenerator<SourceItem> {
  const read = readers[src.format];
  for (let f = from.file; f < src.files.length; f++) {
    const start = f === from.file ? { offset: from.offset, row: from.row } : { offset: 0, row: 0 };
    try {
      for await (const item of read(src.files[f]!, start)) {
        yield { ...item, position: { file: f, offset: item.next.offset, row: item.next.row } };
      }
    } catch (err) {
      if (err instanceof DataError) throw err;
      throw new DataError(`cannot read ${src.files[f]} as ${src.format}: ${(err as Error).message}`);
    }
  }
}
