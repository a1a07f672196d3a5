// Saving a checkpoint, in the order that keeps the previous one safe whatever fails:
//   1. beginCheckpoint (rank 0 / the coordinator): removes what crashed saves left, makes
//      `step-000120.tmp-<hex>/` and hands its path to the ranks;
//   2. writeRankShard (every rank): its own `rank-NNNNN.safetensors`, fsynced, and a report
//      of what it holds with the file's size and sha256 (of the bytes as they were written:
//      one pass, no read-back);
//   3. commitCheckpoint (rank 0, once every rank reported success): checks every shard file
//      against its report (verify: "full" re-hashes each; "local" re-hashes only those this
//      process did not write itself), writes manifest.json last, renames the folder to
//      `step-000120/`, fsyncs the root, moves `latest` (temp + rename), prunes to keep_last.
// A crash before the rename leaves only a `.tmp-` folder, which no reader takes for a
// checkpoint; a crash after it leaves a complete checkpoint.
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { basename, dirname, join } from "node:path";
import type { MeshShape } from "../../mesh/index.ts";
import type { HFConfigJson } from "../config.ts";
import type { OptimizerStateSource } from "../optim/index.ts";
import { atomicWriteText, writeSafetensors, type TensorToWrite } from "../hf/safetensors-write.ts";
import { fsyncPath } from "./durable.ts";
import { failingHashes, forgetUnder, moveKnown, rememberHash, type VerifyMode } from "./hashed-here.ts";
import { LATEST_FILE, completeNameOfTmp, isTmpName, listComplete, rankFileName, stepDirName } from "./layout.ts";
import {
  FORMAT,
  FORMAT_VERSION,
  MANIFEST_FILE,
  checkTiling,
  optimTensorName,
  parseManifest,
  type CheckpointManifest,
  type OptimizerScalars,
  type TensorEntry,
} from "./manifest.ts";
import { checkRange, numel, pieceShape, wholeRange, type ShardRange } from "./shard-spec.ts";
import { toTaggedJSON } from "./tagged-json.ts";

type FloatData = Float32Array | Float64Array;

/** A tensor, or this rank's part of it. */
export interface TensorShard {
  name: string;
  /** The full logical shape. */
  shape: readonly number[];
  /** The flat elements this rank holds; absent: all of them. */
  range?: ShardRange;
  /** The range's values (fp32; fp64 is narrowed), or a function producing them when the writer reaches this tensor. */
  data: FloatData | (() => FloatData | Promise<FloatData>);
}

export interface RankShardInput {
  tensors: readonly TensorShard[];
  /** This rank's optimizer state (buffers as values or read when the writer reaches them). Each
   *  parameter's buffers hold the same range as its tensor here, unless `optimizerLayout` says
   *  otherwise (state sharded where weights are not, ZeRO-1). */
  optimizer?: OptimizerStateSource;
  optimizerLayout?: Readonly<Record<string, { shape: readonly number[]; range?: ShardRange }>>;
}

/** What one rank wrote: sent to rank 0, which commits only with every rank's report. Plain data. */
export interface RankShardReport {
  rank: number;
  file: string;
  bytes: number;
  sha256: string;
  tensors: { name: string; shape: number[]; start: number; end: number }[];
  optimizer: OptimizerScalars | null;
}

/** Everything of a checkpoint but its tensors. */
export interface CheckpointMeta {
  step: number;
  tokensSeen: number;
  mesh: MeshShape;
  /** The job config (JSON). */
  config?: unknown;
  /** The model's HF config.json object (configToHF), for exportHF. */
  model?: HFConfigJson | null;
  /** The data pipeline state: typed arrays and bigints are kept (tagged-json.ts). */
  data?: unknown;
  rng?: unknown;
}

export interface CommitOptions {
  /** Keep this many complete checkpoints (the new one included); absent: keep all. */
  keepLast?: number;
  /**
   * How the shard files are checked against their reports before the commit:
   * - full (default): re-read and re-hash every shard;
   * - local: the same, except for shards this process wrote itself (writeRankShard) and that
   *   are unchanged since (hashed-here.ts): their hash was taken of the bytes going out, and
   *   reading them back would only read this process's page cache. What the trainer uses:
   *   one pass over the data for a single-process job, full checks of other processes' shards;
   * - size: sizes only.
   */
  verify?: VerifyMode;
  /** Runs after the manifest is written, before the rename (failure injection in tests). */
  beforeRename?: () => void | Promise<void>;
}

/** Step 1: a fresh temporary folder for `step` under `root`, after removing leftovers of crashed saves. */
export async function beginCheckpoint(root: string, step: number): Promise<string> {
  const name = stepDirName(step);
  await mkdir(root, { recursive: true });
  await cleanLeftovers(root);
  const dir = join(root, `${name}.tmp-${randomBytes(6).toString("hex")}`);
  await mkdir(dir);
  return dir;
}

/** Removes the temporary folders and files that crashed or failed saves left in `root`. */
export async function cleanLeftovers(root: string): Promise<string[]> {
  const gone: string[] = [];
  for (const name of await readdir(root)) {
    if (!isTmpName(name)) continue;
    await rm(join(root, name), { recursive: true, force: true });
    forgetUnder(join(root, name));
    gone.push(name);
  }
  return gone;
}

/** Step 2, on each rank: writes its shard file into the temporary folder and reports it. */
export async function writeRankShard(dir: string, rank: number, input: RankShardInput): Promise<RankShardReport> {
  if (!Number.isInteger(rank) || rank < 0) throw new Error(`checkpoint: rank must be a non-negative integer, got ${rank}`);
  const file = rankFileName(rank);
  const path = join(dir, file);
  const toWrite: TensorToWrite[] = [];
  const held: RankShardReport["tensors"] = [];
  const ranges = new Map<string, { shape: readonly number[]; range: ShardRange }>();

  const add = (name: string, shape: readonly number[], range: ShardRange, data: TensorShard["data"]) => {
    checkRange(range, numel(shape), `checkpoint: rank ${rank}: tensor ${name}`);
    held.push({ name, shape: [...shape], start: range.start, end: range.end });
    if (range.end === range.start) return;
    toWrite.push({ name, shape: pieceShape(shape, range), data: async () => asF32(typeof data === "function" ? await data() : data) });
  };

  for (const t of input.tensors) {
    const range = t.range ?? wholeRange(t.shape);
    ranges.set(t.name, { shape: t.shape, range });
    add(t.name, t.shape, range, t.data);
  }

  let optimizer: OptimizerScalars | null = null;
  if (input.optimizer) {
    const st = input.optimizer;
    optimizer = { step: st.step, params: {} };
    for (const [param, ps] of Object.entries(st.params)) {
      const given = input.optimizerLayout?.[param];
      const lay = given ? { shape: given.shape, range: given.range ?? wholeRange(given.shape) } : ranges.get(param);
      if (!lay) throw new Error(`checkpoint: rank ${rank}: optimizer state of ${param}, but neither a tensor of that name nor an optimizerLayout entry says which range it holds`);
      optimizer.params[param] = { algorithm: ps.algorithm, step: ps.step };
      for (const [buf, values] of Object.entries(ps.buffers)) add(optimTensorName(param, buf), lay.shape, lay.range, values);
    }
  }

  const written = await writeSafetensors(path, toWrite, { dtype: "F32", metadata: { "tessera.rank": String(rank) }, sha256: true });
  await rememberHash(path, written.sha256!);
  return { rank, file, bytes: written.bytes, sha256: written.sha256!, tensors: held.filter((t) => t.end > t.start), optimizer };
}

function asF32(a: FloatData): Float32Array {
  return a instanceof Float32Array ? a : Float32Array.from(a);
}

/** The manifest of a checkpoint from its metadata and every rank's report; checks that the reports fit together. */
export function buildManifest(meta: CheckpointMeta, reports: readonly RankShardReport[]): CheckpointManifest {
  const worldSize = meta.mesh.dp * meta.mesh.fsdp * meta.mesh.sp;
  const byRank = new Map<number, RankShardReport>();
  for (const r of reports) {
    if (r.rank >= worldSize) throw new Error(`checkpoint: report from rank ${r.rank}, outside world size ${worldSize}`);
    if (byRank.has(r.rank)) throw new Error(`checkpoint: two reports from rank ${r.rank}`);
    byRank.set(r.rank, r);
  }
  const missing = Array.from({ length: worldSize }, (_, i) => i).filter((i) => !byRank.has(i));
  if (missing.length) throw new Error(`checkpoint: no shard report from rank(s) ${missing.join(", ")} of ${worldSize}`);

  const tensors: Record<string, TensorEntry> = {};
  const files: CheckpointManifest["files"] = {};
  let optimizer: OptimizerScalars | null = null;
  for (const r of [...byRank.values()].sort((a, b) => a.rank - b.rank)) {
    files[r.file] = { rank: r.rank, bytes: r.bytes, sha256: r.sha256 };
    for (const t of r.tensors) {
      const e = (tensors[t.name] ??= { shape: t.shape, dtype: "F32", shards: [] });
      if (e.shape.join() !== t.shape.join()) {
        throw new Error(`checkpoint: tensor ${t.name} is [${e.shape.join(", ")}] on one rank and [${t.shape.join(", ")}] on rank ${r.rank}`);
      }
      e.shards.push({ rank: r.rank, file: r.file, start: t.start, end: t.end });
    }
    if (r.optimizer) {
      optimizer ??= { step: r.optimizer.step, params: {} };
      if (optimizer.step !== r.optimizer.step) throw new Error(`checkpoint: optimizer step ${r.optimizer.step} on rank ${r.rank}, ${optimizer.step} on another`);
      for (const [p, s] of Object.entries(r.optimizer.params)) {
        const prev = optimizer.params[p];
        if (prev && (prev.algorithm !== s.algorithm || prev.step !== s.step)) {
          throw new Error(`checkpoint: optimizer state of ${p}: ${s.algorithm} step ${s.step} on rank ${r.rank}, ${prev.algorithm} step ${prev.step} on another`);
        }
        optimizer.params[p] = s;
      }
    }
  }
  for (const [name, e] of Object.entries(tensors)) {
    e.shards.sort((a, b) => a.start - b.start);
    checkTiling(name, e, "shard reports");
  }
  return {
    format: FORMAT,
    version: FORMAT_VERSION,
    step: meta.step,
    tokensSeen: meta.tokensSeen,
    createdAt: new Date().toISOString(),
    mesh: { dp: meta.mesh.dp, fsdp: meta.mesh.fsdp, sp: meta.mesh.sp },
    worldSize,
    config: toTaggedJSON(meta.config ?? null),
    model: meta.model ?? null,
    data: toTaggedJSON(meta.data ?? null),
    rng: toTaggedJSON(meta.rng ?? null),
    optimizer,
    tensors,
    files,
  };
}

/** Step 3, on rank 0: verifies the shards, publishes the checkpoint; returns its final path. */
export async function commitCheckpoint(tmpDir: string, manifest: CheckpointManifest, opts: CommitOptions = {}): Promise<string> {
  const name = completeNameOfTmp(basename(tmpDir));
  if (!name) throw new Error(`checkpoint: ${tmpDir} is not a folder made by beginCheckpoint`);
  if (name !== stepDirName(manifest.step)) throw new Error(`checkpoint: manifest of step ${manifest.step} committed into ${tmpDir}`);
  const root = dirname(tmpDir);
  const m = parseManifest(JSON.parse(JSON.stringify(manifest)), `the manifest for ${tmpDir}`);

  const shards: { path: string; bytes: number; rank: number; sha256: string }[] = [];
  for (const [file, f] of Object.entries(m.files)) {
    const path = join(tmpDir, file);
    const st = await stat(path).catch(() => undefined);
    if (!st?.isFile()) throw new Error(`checkpoint: rank ${f.rank}'s shard ${path} is missing; not committing`);
    if (st.size !== f.bytes) throw new Error(`checkpoint: rank ${f.rank}'s shard ${path} is ${st.size} bytes, its report says ${f.bytes}; not committing`);
    shards.push({ path, bytes: f.bytes, rank: f.rank, sha256: f.sha256 });
  }
  const [bad] = await failingHashes(shards, opts.verify ?? "full");
  if (bad) throw new Error(`checkpoint: rank ${bad.rank}'s shard ${bad.path} does not match its reported sha256; not committing`);
  await atomicWriteText(join(tmpDir, MANIFEST_FILE), JSON.stringify(m, null, 1) + "\n");
  await opts.beforeRename?.();

  const final = join(root, name);
  // Re-saving a step that exists (a retried command): the old folder steps aside under a
  // temporary name, so that a crash here leaves it to the leftover cleaning, never half-replaced.
  const old = await stat(final).then(
    () => join(root, `${name}.tmp-replaced-${randomBytes(4).toString("hex")}`),
    () => undefined,
  );
  if (old) await rename(final, old);
  forgetUnder(final);
  await rename(tmpDir, final);
  moveKnown(tmpDir, final);
  await fsyncPath(root);
  if (old) await rm(old, { recursive: true, force: true });
  await atomicWriteText(join(root, LATEST_FILE), name + "\n");
  if (opts.keepLast !== undefined) await prune(root, opts.keepLast, name);
  return final;
}

/**
 * Removes the oldest complete checkpoints until `keepLast` remain, never `keep`. Steps after
 * `keep`'s belong to a run abandoned by resuming from an older checkpoint: they go first.
 */
export async function prune(root: string, keepLast: number, keep: string): Promise<string[]> {
  if (!Number.isInteger(keepLast) || keepLast < 1) throw new Error(`checkpoint: keep_last must be a positive integer, got ${keepLast}`);
  const all = await listComplete(root);
  const current = all.find((c) => c.name === keep)?.step ?? Infinity;
  const others = all.filter((c) => c.name !== keep);
  others.sort((a, b) => Number(a.step < current) - Number(b.step < current) || a.step - b.step);
  const drop = others.slice(0, Math.max(0, others.length + 1 - keepLast));
  for (const c of drop) {
    // Renamed out of the complete names first, so a crash mid-removal cannot leave a
    // half-deleted folder that looks like a checkpoint.
    const doomed = join(root, `${c.name}.tmp-pruned-${randomBytes(4).toString("hex")}`);
    await rename(c.path, doomed);
    forgetUnder(c.path);
    await rm(doomed, { recursive: true, force: true });
  }
  if (drop.length) await fsyncPath(root);
  return drop.map((c) => c.name);
}

export interface SaveOptions extends CommitOptions {
  /** Runs after each rank's shard is written (failure injection in tests). */
  afterShard?: (rank: number) => void | Promise<void>;
}

/**
 * The whole protocol in one process: every rank's input here, in rank order (a single-rank
 * job, or tests). A failure leaves the previous checkpoint as it was and a `.tmp-` folder
 * that the next save removes. Every shard is written here, so the commit's verify defaults
 * to "local" (no read-back); pass "full" to re-hash them.
 */
export async function saveCheckpoint(root: string, meta: CheckpointMeta, ranks: readonly RankShardInput[], opts: SaveOptions = {}): Promise<string> {
  const dir = await beginCheckpoint(root, meta.step);
  const reports: RankShardReport[] = [];
  for (let rank = 0; rank < ranks.length; rank++) {
    reports.push(await writeRankShard(dir, rank, ranks[rank]!));
    await opts.afterShard?.(rank);
  }
  return commitCheckpoint(dir, buildManifest(meta, reports), { verify: "local", ...opts });
}
