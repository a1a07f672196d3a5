// Writes safetensors files the way `safetensors.torch.save_file` does: `__metadata__`
// {"format": "pt"} (transformers refuses files without it), a header padded with spaces to a
// multiple of 8 bytes so the data starts aligned, tensors laid out in name order.
// Each file is written atomically: a temporary name in the same folder, fsync, rename,
// fsync of the folder; a crash leaves the old file or the new one, never half of one.
// The bytes go out in one pass through a FileSink (large positioned writes, several in
// flight), which can sha256 them on the way (`sha256: true`), so checkpoints need no re-read.
import { open, rename, unlink, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { randomBytes } from "node:crypto";
import { FileSink, type SinkResult } from "./file-sink.ts";
import { f32ToBf16 } from "./half.ts";
import { DTYPE_BYTES, numel } from "./safetensors-read.ts";

export type WriteDtype = "F32" | "BF16" | "I32" | "I64";

export interface TensorToWrite {
  name: string;
  shape: readonly number[];
  /** Values, or a function that produces them when the writer reaches this tensor (so a
   * model's parameters need not all be copied to host memory at once). */
  data: Float32Array | Int32Array | (() => Float32Array | Int32Array | Promise<Float32Array | Int32Array>);
  /** Defaults to the writer's dtype for float data, I32 for Int32Array. */
  dtype?: WriteDtype;
}

export interface WriteOptions {
  /** Float storage dtype; default F32. */
  dtype?: "F32" | "BF16";
  metadata?: Record<string, string>;
  /** Hash the file's bytes as they are written; the result's `sha256`. */
  sha256?: boolean;
}

/** Writes `path` atomically; its size and, when asked, the sha256 of exactly the bytes written. */
export async function writeSafetensors(path: string, tensors: readonly TensorToWrite[], opts: WriteOptions = {}): Promise<SinkResult> {
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.name === sorted[i - 1]!.name) throw new Error(`safetensors: tensor ${sorted[i]!.name} given twice for ${path}`);
  }
  const header: Record<string, unknown> = { __metadata__: { format: "pt", ...opts.metadata } };
  const dtypes: WriteDtype[] = [];
  let offset = 0;
  for (const t of sorted) {
    const dtype = t.dtype ?? (t.data instanceof Int32Array ? "I32" : (opts.dtype ?? "F32"));
    dtypes.push(dtype);
    const bytes = numel(t.shape) * DTYPE_BYTES[dtype];
    header[t.name] = { dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = Buffer.from(JSON.stringify(header), "utf8");
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const lenBytes = Buffer.alloc(8);
  lenBytes.writeBigUInt64LE(BigInt(json.length));

  let written: SinkResult | undefined;
  await atomicWrite(path, async (fh) => {
    const sink = new FileSink(fh, { sha256: opts.sha256 === true });
    // A failed read of a tensor (a device copy) or write (a full disk) names the file and the tensor.
    let at = "its header";
    try {
      await sink.put(lenBytes);
      await sink.put(json);
      for (let i = 0; i < sorted.length; i++) {
        const t = sorted[i]!;
        at = `tensor ${t.name}`;
        // Produced while the previous tensors' writes are still in flight: a device copy overlaps the disk.
        const data = typeof t.data === "function" ? await t.data() : t.data;
        if (data.length !== numel(t.shape)) {
          throw new Error(`safetensors: tensor ${t.name} has ${data.length} values but shape [${t.shape.join(", ")}] for ${path}`);
        }
        await sink.put(encodeTensor(t.name, data, dtypes[i]!));
      }
      at = "the end of the file";
      written = await sink.end();
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      if (msg.startsWith("safetensors:")) throw err;
      throw new Error(`safetensors: writing ${path} (${at}): ${msg}`, { cause: err });
    }
    if (written.bytes !== 8 + json.length + offset) throw new Error(`safetensors: wrote ${written.bytes} bytes to ${path}, the header promises ${8 + json.length + offset}`);
  });
  return written!;
}

function encodeTensor(name: string, data: Float32Array | Int32Array, dtype: WriteDtype): Uint8Array {
  const asBytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  switch (dtype) {
    case "F32":
      return asBytes(data instanceof Float32Array ? data : Float32Array.from(data));
    case "BF16":
      return asBytes(f32ToBf16(data instanceof Float32Array ? data : Float32Array.from(data)));
    case "I32":
    case "I64": {
      if (!(data instanceof Int32Array) && !data.every(Number.isInteger)) {
        throw new Error(`safetensors: tensor ${name} has non-integer values for ${dtype}`);
      }
      if (dtype === "I32") return asBytes(data instanceof Int32Array ? data : Int32Array.from(data));
      return asBytes(BigInt64Array.from(data, (v) => BigInt(v)));
    }
  }
}

type Handle = Awaited<ReturnType<typeof open>>;

/** Runs `fill` on a temporary file next to `path`, then moves it into place durably. */
export async function atomicWrite(path: string, fill: (fh: Handle) => Promise<void>): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  const fh = await open(tmp, "wx");
  try {
    await fill(fh);
    await fh.sync();
    await fh.close();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await rename(tmp, path);
  const dh = await open(dir, "r");
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** A small text file (config.json, index.json), written atomically. */
export async function atomicWriteText(path: string, text: string): Promise<void> {
  await atomicWrite(path, (fh) => writeFile(fh, text, "utf8"));
}
