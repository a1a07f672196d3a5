// Opening a checkpoint and reading the part of a tensor a rank needs, under any mesh.
// Opening checks everything before anything is used: the manifest, that every shard file is
// there with its recorded size and (by default) sha256, and that each file's safetensors
// header holds the pieces the manifest says. The sha256 pass reads each file once in large
// chunks, reading ahead while it hashes (sha256File). Reading a range touches only the bytes of the
// pieces that overlap it, with positioned reads straight into the result.
import { open, readFile, stat, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import type { OptimizerStateDict, ParamState } from "../optim/index.ts";
import { SafetensorsReader } from "../hf/safetensors-read.ts";
import { failingHashes, type VerifyMode } from "./hashed-here.ts";
import { LATEST_FILE } from "./layout.ts";
import { MANIFEST_FILE, optimTensorName, parseManifest, type CheckpointManifest, type TensorEntry } from "./manifest.ts";
import { checkRange, numel, wholeRange, type ShardRange } from "./shard-spec.ts";
import { fromTaggedJSON } from "./tagged-json.ts";

export interface OpenOptions {
  /**
   * - full (default): read and sha256 every shard file;
   * - local: the same, except for files this process wrote or hashed whole itself and that are
   *   unchanged since (hashed-here.ts): a resume in the process that saved or already
   *   verified the checkpoint reads nothing twice;
   * - size: sizes and headers only (the coordinator verified it moments ago, or large checkpoints).
   */
  verify?: VerifyMode;
}

/** What a rank wants of one parameter's optimizer state. */
export interface OptimizerTarget {
  /** Flat elements wanted; absent: all. */
  range?: ShardRange;
  /** Shape of the returned ParamState (the rank's parameter's); absent: the logical shape when whole, else [length]. */
  shape?: readonly number[];
}

export class Checkpoint {
  readonly #handles = new Map<string, Promise<FileHandle>>();
  /** Per file, per tensor: the absolute byte offset of its piece. */
  readonly #offsets: ReadonlyMap<string, ReadonlyMap<string, number>>;

  private constructor(
    /** The checkpoint folder. */
    readonly dir: string,
    readonly manifest: CheckpointManifest,
    offsets: ReadonlyMap<string, ReadonlyMap<string, number>>,
  ) {
    this.#offsets = offsets;
  }

  /** Opens and validates a checkpoint folder, or the one a root's `latest` names. */
  static async open(path: string, opts: OpenOptions = {}): Promise<Checkpoint> {
    const dir = await resolveCheckpointDir(path);
    const where = join(dir, MANIFEST_FILE);
    const text = await readFile(where, "utf8").catch((err: NodeJS.ErrnoException) => {
      throw new Error(`checkpoint: cannot read ${where}: ${err.message}`);
    });
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new Error(`checkpoint: ${where} is not JSON: ${(err as Error).message}`);
    }
    const m = parseManifest(json, where);
    const holds = (file: string) => `(rank ${m.files[file]!.rank}'s shard, holding ${describe(tensorsIn(m, file))})`;
    const shards: { file: string; path: string; bytes: number; sha256: string }[] = [];
    for (const [file, f] of Object.entries(m.files)) {
      const path = join(dir, file);
      const st = await stat(path).catch(() => undefined);
      if (!st?.isFile()) throw new Error(`checkpoint: shard file ${path} is missing ${holds(file)}`);
      if (st.size !== f.bytes) throw new Error(`checkpoint: shard file ${path} is ${st.size} bytes, the manifest says ${f.bytes}: truncated or overwritten ${holds(file)}`);
      shards.push({ file, path, bytes: f.bytes, sha256: f.sha256 });
    }
    const [bad] = await failingHashes(shards, opts.verify ?? "full");
    if (bad) throw new Error(`checkpoint: shard file ${bad.path} fails its sha256 checksum: corrupt ${holds(bad.file)}`);
    const offsets = new Map<string, Map<string, number>>();
    for (const file of Object.keys(m.files)) offsets.set(file, await pieceOffsets(m, file, join(dir, file)));
    return new Checkpoint(dir, m, offsets);
  }

  get step(): number {
    return this.manifest.step;
  }

  /** The model tensors (optimizer state excluded), sorted. */
  names(): string[] {
    return Object.keys(this.manifest.tensors)
      .filter((n) => !n.startsWith("optim."))
      .sort();
  }

  entry(name: string): TensorEntry {
    const e = this.manifest.tensors[name];
    if (!e) throw new Error(`checkpoint: tensor ${name} is not in ${this.dir}`);
    return e;
  }

  /** The job config, the data pipeline state and the RNG state as they were saved. */
  get config(): unknown {
    return fromTaggedJSON(this.manifest.config);
  }

  get dataState(): unknown {
    return fromTaggedJSON(this.manifest.data);
  }

  get rngState(): unknown {
    return fromTaggedJSON(this.manifest.rng);
  }

  /** Flat elements `range` (default: all) of `name`, in fp32, whatever ranks held them at save time. */
  async loadShard(name: string, range?: ShardRange): Promise<Float32Array> {
    const e = this.entry(name);
    const want = range ?? wholeRange(e.shape);
    checkRange(want, numel(e.shape), `checkpoint: tensor ${name}`);
    const out = new Float32Array(want.end - want.start);
    const bytes = new Uint8Array(out.buffer);
    for (const p of e.shards) {
      const lo = Math.max(want.start, p.start);
      const hi = Math.min(want.end, p.end);
      if (lo >= hi) continue;
      const base = this.#offsets.get(p.file)!.get(name)!;
      const fh = await this.#handle(p.file).catch((err: Error) => {
        throw new Error(`checkpoint: cannot open shard file ${join(this.dir, p.file)} for tensor ${name}: ${err.message}`);
      });
      const into = bytes.subarray((lo - want.start) * 4, (hi - want.start) * 4);
      let done = 0;
      while (done < into.length) {
        const { bytesRead } = await fh.read(into, done, into.length - done, base + (lo - p.start) * 4 + done);
        if (bytesRead === 0) throw new Error(`checkpoint: shard file ${join(this.dir, p.file)} ended while reading tensor ${name} (truncated after open)`);
        done += bytesRead;
      }
    }
    return out;
  }

  /**
   * The optimizer state a rank needs: for each parameter in `targets` (default: every
   * parameter with state, whole), its buffers over the wanted range. Feed to loadStateDict.
   */
  async loadOptimizerState(targets?: Readonly<Record<string, OptimizerTarget>>): Promise<OptimizerStateDict> {
    const o = this.manifest.optimizer;
    if (!o) throw new Error(`checkpoint: ${this.dir} holds no optimizer state`);
    const params: Record<string, ParamState> = {};
    const wanted: Readonly<Record<string, OptimizerTarget>> = targets ?? Object.fromEntries(Object.keys(o.params).map((p) => [p, {}]));
    for (const [param, t] of Object.entries(wanted)) {
      const s = o.params[param];
      // A parameter that never had a gradient has no state: the optimizer starts it fresh, as it would have.
      if (!s) continue;
      const prefix = optimTensorName(param, "");
      const bufs = Object.keys(this.manifest.tensors).filter((n) => n.startsWith(prefix) && !n.slice(prefix.length).includes("."));
      const buffers: Record<string, Float32Array> = {};
      let shape: number[] = [];
      for (const n of bufs) {
        const logical = this.manifest.tensors[n]!.shape;
        const range = t.range ?? wholeRange(logical);
        buffers[n.slice(prefix.length)] = await this.loadShard(n, range);
        const whole = range.start === 0 && range.end === numel(logical);
        shape = t.shape ? [...t.shape] : whole ? [...logical] : [range.end - range.start];
      }
      params[param] = { algorithm: s.algorithm, step: s.step, shape, buffers };
    }
    return { step: o.step, params };
  }

  async close(): Promise<void> {
    const hs = [...this.#handles.values()];
    this.#handles.clear();
    await Promise.all(hs.map(async (h) => (await h).close()));
  }

  #handle(file: string): Promise<FileHandle> {
    let h = this.#handles.get(file);
    if (!h) {
      h = open(join(this.dir, file), "r");
      this.#handles.set(file, h);
      h.catch(() => this.#handles.delete(file));
    }
    return h;
  }
}

/** Opens and validates a checkpoint folder, or the checkpoint a root's `latest` names. */
export function openCheckpoint(path: string, opts: OpenOptions = {}): Promise<Checkpoint> {
  return Checkpoint.open(path, opts);
}

/** `ckpt.loadShard`: the slice of a tensor that a rank needs under its own mesh. */
export function loadShard(ckpt: Checkpoint, tensorName: string, target?: ShardRange): Promise<Float32Array> {
  return ckpt.loadShard(tensorName, target);
}

/** A checkpoint folder itself, or the one named by `latest` in a root. */
export async function resolveCheckpointDir(path: string): Promise<string> {
  if (await isFile(join(path, MANIFEST_FILE))) return path;
  const pointer = join(path, LATEST_FILE);
  const name = await readFile(pointer, "utf8").then(
    (t) => t.trim(),
    () => undefined,
  );
  if (name === undefined) throw new Error(`checkpoint: ${path} holds neither ${MANIFEST_FILE} nor a ${LATEST_FILE} pointer`);
  if (!/^step-\d+$/.test(name)) throw new Error(`checkpoint: ${pointer} names ${JSON.stringify(name)}, not a checkpoint folder`);
  const dir = join(path, name);
  if (!(await isFile(join(dir, MANIFEST_FILE)))) throw new Error(`checkpoint: ${pointer} names ${dir}, which holds no ${MANIFEST_FILE}`);
  return dir;
}

function isFile(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isFile(),
    () => false,
  );
}

function tensorsIn(m: CheckpointManifest, file: string): string[] {
  return Object.entries(m.tensors)
    .filter(([, t]) => t.shards.some((p) => p.file === file))
    .map(([n]) => n)
    .sort();
}

function describe(names: string[]): string {
  if (names.length === 0) return "no tensors";
  const shown = names.slice(0, 4).join(", ");
  return names.length > 4 ? `${shown} and ${names.length - 4} more` : shown;
}

/** Validates a shard file's header against the manifest; the byte offset of each piece. */
async function pieceOffsets(m: CheckpointManifest, file: string, path: string): Promise<Map<string, number>> {
  const reader = await SafetensorsReader.open(path).catch((err: Error) => {
    throw new Error(`checkpoint: shard file ${path}: ${err.message}`);
  });
  try {
    const out = new Map<string, number>();
    for (const [name, t] of Object.entries(m.tensors)) {
      for (const p of t.shards) {
        if (p.file !== file) continue;
        if (!reader.has(name)) throw new Error(`checkpoint: shard file ${path} lacks tensor ${name}, which the manifest puts there`);
        const info = reader.info(name);
        if (info.dtype !== "F32" || info.end - info.start !== (p.end - p.start) * 4) {
          throw new Error(`checkpoint: tensor ${name} in ${path} is ${info.dtype} of ${info.end - info.start} bytes; the manifest says F32 elements [${p.start}, ${p.end})`);
        }
        out.set(name, info.start);
      }
    }
    return out;
  } finally {
    await reader.close();
  }
}
