// Reads safetensors checkpoints: one file, or shards named by `model.safetensors.index.json`.
//
// Format: 8-byte little-endian header length N, N bytes of JSON
// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}), then the data;
// offsets are relative to the end of the header. Opening validates the whole header
// (sizes, offsets in range, no overlaps) so that a corrupt file fails at open, naming the
// tensor and the file. Tensors are read one at a time with positioned reads into a buffer of
// that tensor's size: a checkpoint is never held in memory whole.
import { open, readFile, stat, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { bf16ToF32, f16ToF32 } from "./half.ts";

export type SafetensorsDtype = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

export const DTYPE_BYTES: Record<SafetensorsDtype, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** Headers larger than this are treated as corrupt rather than allocated. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface TensorInfo {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  readonly file: string;
  /** Absolute byte range in `file`. */
  readonly start: number;
  readonly end: number;
}

interface OpenFile {
  path: string;
  handle: FileHandle;
}

/** A read-only view of the tensors of one checkpoint (one file or all shards of one). */
export class SafetensorsReader {
  private constructor(
    private readonly files: OpenFile[],
    private readonly tensors: Map<string, { info: TensorInfo; file: OpenFile }>,
    /** `__metadata__` of the first file (shards carry the same). */
    readonly metadata: Readonly<Record<string, string>>,
    /** Where the checkpoint was opened from, for messages. */
    readonly source: string,
  ) {}

  /**
   * Opens a `.safetensors` file, or a folder holding `model.safetensors.index.json` (sharded)
   * or `model.safetensors`.
   */
  static async open(path: string): Promise<SafetensorsReader> {
    const st = await stat(path).catch((err: NodeJS.ErrnoException) => {
      throw new Error(`safetensors: cannot open ${path}: ${err.message}`);
    });
    if (!st.isDirectory()) return SafetensorsReader.openFiles([path], undefined, path);
    const indexPath = join(path, "model.safetensors.index.json");
    const index = await readFile(indexPath, "utf8").catch(() => undefined);
    if (index === undefined) return SafetensorsReader.openFiles([join(path, "model.safetensors")], undefined, path);
    let weightMap: Record<string, string>;
    try {
      const parsed = JSON.parse(index) as { weight_map?: unknown };
      if (typeof parsed.weight_map !== "object" || parsed.weight_map === null) throw new Error("no weight_map object");
      weightMap = parsed.weight_map as Record<string, string>;
    } catch (err) {
      throw new Error(`safetensors: bad index ${indexPath}: ${(err as Error).message}`);
    }
    const shardNames = [...new Set(Object.values(weightMap))].sort();
    for (const s of shardNames) {
      if (typeof s !== "string" || s !== basename(s)) throw new Error(`safetensors: bad shard name ${JSON.stringify(s)} in ${indexPath}`);
    }
    return SafetensorsReader.openFiles(
      shardNames.map((s) => join(path, s)),
      { weightMap, indexPath },
      path,
    );
  }

  private static async openFiles(
    paths: string[],
    index: { weightMap: Record<string, string>; indexPath: string } | undefined,
    source: string,
  ): Promise<SafetensorsReader> {
    const files: OpenFile[] = [];
    const tensors = new Map<string, { info: TensorInfo; file: OpenFile }>();
    let metadata: Record<string, string> = {};
    try {
      for (const p of paths) {
        const handle = await open(p, "r").catch((err: NodeJS.ErrnoException) => {
          throw new Error(`safetensors: cannot open ${p}: ${err.message}`);
        });
        const file = { path: p, handle };
        files.push(file);
        const header = await readHeader(file);
        if (files.length === 1) metadata = header.metadata;
        for (const info of header.tensors) {
          if (tensors.has(info.name)) {
            throw new Error(`safetensors: tensor ${info.name} is in both ${tensors.get(info.name)!.file.path} and ${p}`);
          }
          tensors.set(info.name, { info, file });
        }
      }
      if (index) {
        for (const [name, shard] of Object.entries(index.weightMap)) {
          const entry = tensors.get(name);
          if (!entry) throw new Error(`safetensors: tensor ${name} listed in ${index.indexPath} is missing from ${join(dirname(index.indexPath), shard)}`);
          if (basename(entry.file.path) !== shard) {
            throw new Error(`safetensors: tensor ${name} is in ${entry.file.path}, but ${index.indexPath} says ${shard}`);
          }
        }
      }
    } catch (err) {
      await Promise.all(files.map((f) => f.handle.close()));
      throw err;
    }
    return new SafetensorsReader(files, tensors, metadata, source);
  }

  names(): string[] {
    return [...this.tensors.keys()].sort();
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const e = this.tensors.get(name);
    if (!e) throw new Error(`safetensors: tensor ${name} not found in ${this.source}`);
    return e.info;
  }

  /** The tensor as float32 (float dtypes exactly; integer dtypes by value). */
  async readFloat32(name: string, expectShape?: readonly number[]): Promise<Float32Array> {
    const { info, bytes } = await this.readBytes(name, expectShape);
    const n = numel(info.shape);
    switch (info.dtype) {
      case "F32":
        return new Float32Array(bytes.buffer, bytes.byteOffset, n);
      case "BF16":
        return bf16ToF32(new Uint16Array(bytes.buffer, bytes.byteOffset, n));
      case "F16":
        return f16ToF32(new Uint16Array(bytes.buffer, bytes.byteOffset, n));
      case "F64":
        return Float32Array.from(new Float64Array(bytes.buffer, bytes.byteOffset, n));
      default:
        return Float32Array.from(intValues(info, bytes), Number);
    }
  }

  /** An integer tensor as int32; a value outside the int32 range is an error. */
  async readInt32(name: string, expectShape?: readonly number[]): Promise<Int32Array> {
    const { info, bytes } = await this.readBytes(name, expectShape);
    if (info.dtype.startsWith("F") || info.dtype === "BF16") {
      throw new Error(`safetensors: tensor ${name} in ${info.file} is ${info.dtype}, not an integer tensor`);
    }
    const vals = intValues(info, bytes);
    const out = new Int32Array(vals.length);
    for (let i = 0; i < vals.length; i++) {
      const v = Number(vals[i]);
      if (v !== (v | 0)) throw new Error(`safetensors: tensor ${name} in ${info.file}: value ${v} at ${i} does not fit int32`);
      out[i] = v;
    }
    return out;
  }

  private async readBytes(name: string, expectShape?: readonly number[]): Promise<{ info: TensorInfo; bytes: Uint8Array }> {
    const e = this.tensors.get(name);
    if (!e) throw new Error(`safetensors: tensor ${name} not found in ${this.source}`);
    const { info, file } = e;
    if (expectShape && !sameShape(info.shape, expectShape)) {
      throw new Error(
        `safetensors: tensor ${name} in ${info.file} has shape [${info.shape.join(", ")}], expected [${expectShape.join(", ")}]`,
      );
    }
    const len = info.end - info.start;
    // A fresh ArrayBuffer per tensor keeps typed-array views aligned.
    const bytes = new Uint8Array(new ArrayBuffer(len));
    await readFully(file, bytes, info.start, `tensor ${name}`);
    return { info, bytes };
  }

  async close(): Promise<void> {
    await Promise.all(this.files.map((f) => f.handle.close()));
  }
}

async function readFully(file: OpenFile, into: Uint8Array, position: number, what: string): Promise<void> {
  let done = 0;
  while (done < into.length) {
    const { bytesRead } = await file.handle.read(into, done, into.length - done, position + done);
    if (bytesRead === 0) throw new Error(`safetensors: ${file.path} ended while reading ${what} (truncated file)`);
    done += bytesRead;
  }
}

async function readHeader(file: OpenFile): Promise<{ tensors: TensorInfo[]; metadata: Record<string, string> }> {
  const where = file.path;
  const { size } = await file.handle.stat();
  if (size < 8) throw new Error(`safetensors: ${where} is ${size} bytes, too short for a header`);
  const lenBytes = new Uint8Array(8);
  await readFully(file, lenBytes, 0, "the header length");
  const headerLen = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (headerLen > BigInt(size - 8) || headerLen > BigInt(MAX_HEADER_BYTES)) {
    throw new Error(`safetensors: ${where}: header length ${headerLen} exceeds the file size ${size} (corrupt or truncated file)`);
  }
  const n = Number(headerLen);
  const headerBytes = new Uint8Array(n);
  await readFully(file, headerBytes, 8, "the header");
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
  } catch (err) {
    throw new Error(`safetensors: ${where}: header is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new Error(`safetensors: ${where}: header is not a JSON object`);
  }
  const dataStart = 8 + n;
  const dataSize = size - dataStart;
  const tensors: TensorInfo[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      metadata = (raw ?? {}) as Record<string, string>;
      continue;
    }
    const bad = (why: string) => new Error(`safetensors: tensor ${name} in ${where}: ${why}`);
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e !== "object" || e === null) throw bad("entry is not an object");
    if (typeof e.dtype !== "string" || !(e.dtype in DTYPE_BYTES)) throw bad(`unsupported dtype ${JSON.stringify(e.dtype)}`);
    const dtype = e.dtype as SafetensorsDtype;
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw bad(`bad shape ${JSON.stringify(e.shape)}`);
    const shape = e.shape as number[];
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      throw bad(`bad data_offsets ${JSON.stringify(off)}`);
    }
    const [begin, end] = off as [number, number];
    if (begin > end || end > dataSize) throw bad(`data_offsets [${begin}, ${end}] out of range of the ${dataSize} data bytes (corrupt or truncated file)`);
    const want = numel(shape) * DTYPE_BYTES[dtype];
    if (end - begin !== want) throw bad(`holds ${end - begin} bytes but shape [${shape.join(", ")}] of ${dtype} needs ${want}`);
    tensors.push({ name, dtype, shape, file: where, start: dataStart + begin, end: dataStart + end });
  }
  const byStart = [...tensors].sort((a, b) => a.start - b.start || a.end - b.end);
  for (let i = 1; i < byStart.length; i++) {
    const prev = byStart[i - 1]!;
    const cur = byStart[i]!;
    if (cur.start < prev.end) throw new Error(`safetensors: tensor ${cur.name} in ${where} overlaps tensor ${prev.name}`);
  }
  return { tensors, metadata };
}

function intValues(info: TensorInfo, bytes: Uint8Array): ArrayLike<number | bigint> {
  const n = numel(info.shape);
  const b = bytes.buffer;
  const o = bytes.byteOffset;
  switch (info.dtype) {
    case "I64":
      return new BigInt64Array(b, o, n);
    case "I32":
      return new Int32Array(b, o, n);
    case "I16":
      return new Int16Array(b, o, n);
    case "I8":
      return new Int8Array(b, o, n);
    case "U8":
    case "BOOL":
      return new Uint8Array(b, o, n);
    default:
      throw new Error(`safetensors: tensor ${info.name} in ${info.file} is ${info.dtype}, not an integer tensor`);
  }
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
