// Benchmark of checkpoint writing and reading: one rank's shard (fp32 weights + AdamW's two
// buffers, Qwen2.5-1.5B-like tensor shapes with fewer layers and a smaller vocabulary) through
// the same calls the trainer makes, against the disk's own ceiling (64 MiB writes + fsync;
// cold sequential reads).
//
//   node --import tsx tests/bench/checkpoint.bench.ts [layers] [rounds]    (npm run bench -- checkpoint)
//
// Each figure is the median of `rounds` (default 3): a shared VM disk varies by 2x run to run.
// Phases, each in MB/s of the shard's size:
//   save: writeRankShard (data to host, encode, write, fsync, sha256) then commitCheckpoint
//     with the verify mode the trainer uses (commitJobCheckpoint's);
//   commit "full": the same commit re-reading and re-hashing every shard;
//   resume after a crash: a fresh process, page cache dropped (dd iflag=nocache), doing what
//     the trainer does: findResume, then the rank's load (every tensor and the optimizer state
//     read), its open "local" as rank-actor.ts's (the coordinator's hashes taken on trust) or
//     "full" (every shard hashed again);
//   resume in the saving process (a restart after a rank failure): the same, in this process.
// Writes tests/bench/results/checkpoint.json. Uses about 2.3 GB of disk (3 layers) in the OS temp dir.
import { spawnSync } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { mkdtemp, open, rm } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  beginCheckpoint,
  buildManifest,
  commitCheckpoint,
  openCheckpoint,
  writeRankShard,
  type CommitOptions,
  type OpenOptions,
  type RankShardInput,
} from "../../models/checkpoint/index.ts";
import { findResume } from "../../actors/index.ts";
import type { JobConfig } from "../../runtime/index.ts";
import type { OptimizerStateDict } from "../../models/optim/index.ts";

const LAYERS = Number(process.argv[2] ?? 3);
const ROUNDS = Number(process.argv[3] ?? 3);
const HIDDEN = 1536;
const FFN = 8960;
const KV = 256;
const VOCAB = 32768;
/** The mode commitJobCheckpoint passes (actors/checkpointing.ts). */
const TRAINER_COMMIT: CommitOptions = { verify: "local" };

function shapes(): [string, number[]][] {
  const out: [string, number[]][] = [["model.embed_tokens.weight", [VOCAB, HIDDEN]], ["model.norm.weight", [HIDDEN]]];
  for (let l = 0; l < LAYERS; l++) {
    const p = `model.layers.${l}.`;
    out.push(
      [`${p}input_layernorm.weight`, [HIDDEN]],
      [`${p}post_attention_layernorm.weight`, [HIDDEN]],
      [`${p}self_attn.q_proj.weight`, [HIDDEN, HIDDEN]],
      [`${p}self_attn.q_proj.bias`, [HIDDEN]],
      [`${p}self_attn.k_proj.weight`, [KV, HIDDEN]],
      [`${p}self_attn.k_proj.bias`, [KV]],
      [`${p}self_attn.v_proj.weight`, [KV, HIDDEN]],
      [`${p}self_attn.v_proj.bias`, [KV]],
      [`${p}self_attn.o_proj.weight`, [HIDDEN, HIDDEN]],
      [`${p}mlp.gate_proj.weight`, [FFN, HIDDEN]],
      [`${p}mlp.up_proj.weight`, [FFN, HIDDEN]],
      [`${p}mlp.down_proj.weight`, [HIDDEN, FFN]],
    );
  }
  return out;
}

/** Incompressible values, cheap to make: one random block copied at shifting offsets. */
const BLOCK = randomFillSync(new Float32Array(1 << 24));
let shift = 0;
function filled(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; ) {
    const from = (shift = (shift + 7919) % (BLOCK.length / 2));
    const k = Math.min(n - i, BLOCK.length - from);
    a.set(BLOCK.subarray(from, from + k), i);
    i += k;
  }
  return a;
}

function shardInput(): { input: RankShardInput; bytes: number } {
  const tensors: RankShardInput["tensors"][number][] = [];
  const optimizer: OptimizerStateDict = { step: 100, params: {} };
  let bytes = 0;
  for (const [name, shape] of shapes()) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = filled(n);
    // Through a function, as the trainer's shard input is (the copy to host happens when the writer reaches it).
    tensors.push({ name, shape, data: () => data });
    optimizer.params[name] = { algorithm: "adamw", step: 100, shape, buffers: { exp_avg: filled(n), exp_avg_sq: filled(n) } };
    bytes += 3 * 4 * n;
  }
  return { input: { tensors, optimizer }, bytes };
}

function dropCache(path: string): void {
  const r = spawnSync("dd", [`if=${path}`, "iflag=nocache", "count=0", "status=none"]);
  if (r.status !== 0) throw new Error(`dd could not drop the page cache of ${path}: ${r.stderr}`);
}

async function timed<T>(fn: () => Promise<T>): Promise<{ s: number; value: T }> {
  const t0 = performance.now();
  const value = await fn();
  return { s: (performance.now() - t0) / 1000, value };
}

/** `fn` run ROUNDS times, one after another. */
async function rounds<T>(fn: () => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let r = 0; r < ROUNDS; r++) out.push(await fn());
  return out;
}

const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** The disk's ceiling for this size: 64 MiB writes then fsync; then a cold sequential read. */
async function diskCeiling(dir: string, bytes: number): Promise<{ writeMBs: number; readMBs: number }> {
  const path = join(dir, "ceiling.bin");
  const chunk = new Uint8Array(filled(16 << 20).buffer);
  const w = await timed(async () => {
    const fh = await open(path, "w");
    for (let pos = 0; pos < bytes; pos += chunk.length) await fh.write(chunk, 0, Math.min(chunk.length, bytes - pos), pos);
    await fh.sync();
    await fh.close();
  });
  dropCache(path);
  const r = await timed(async () => {
    const fh = await open(path, "r");
    for (let pos = 0; pos < bytes; pos += chunk.length) await fh.read(chunk, 0, chunk.length, pos);
    await fh.close();
  });
  await rm(path);
  return { writeMBs: bytes / 1e6 / w.s, readMBs: bytes / 1e6 / r.s };
}

/** The trainer's resume of one rank: findResume, then the rank's load (actors/rank-actor.ts opens "local"). */
async function resume(root: string, rankVerify: OpenOptions["verify"]): Promise<void> {
  const cfg = { checkpoint: { dir: root, resume: "auto" } } as unknown as JobConfig;
  const found = await findResume(cfg, (line) => console.log(line));
  if (!found) throw new Error(`bench: nothing to resume in ${root}`);
  const ck = await openCheckpoint(found.dir, { verify: rankVerify });
  try {
    for (const n of ck.names()) await ck.loadShard(n);
    await ck.loadOptimizerState();
  } finally {
    await ck.close();
  }
}

/** A fresh process (nothing remembered of what this one wrote), page cache dropped first. */
function resumeInNewProcess(root: string, file: string, rankVerify: "full" | "local"): number {
  dropCache(file);
  const r = spawnSync(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), "--resume", root, rankVerify], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`bench: resume process failed: ${r.stderr}`);
  return Number(r.stdout.trim().split("\n").at(-1));
}

async function main() {
  const root = await mkdtemp(join(tmpdir(), "tessera-ckpt-bench-"));
  try {
    const { input, bytes } = shardInput();
    const mb = (s: number) => Math.round(bytes / 1e6 / s);
    const ceilings = await rounds(() => diskCeiling(root, bytes));
    const ceiling = { writeMBs: median(ceilings.map((c) => c.writeMBs)), readMBs: median(ceilings.map((c) => c.readMBs)) };
    const meta = { step: 100, tokensSeen: 1, mesh: { dp: 1, fsdp: 1, sp: 1 }, data: { version: 1 } };
    const ckptDir = join(root, "step-000100");
    const file = join(ckptDir, "rank-00000.safetensors");

    // One checkpoint on disk at a time: the previous round's goes first, untimed.
    let shardBytes = 0;
    const saveRound = async (opts: CommitOptions) => {
      await rm(ckptDir, { recursive: true, force: true });
      const dir = await beginCheckpoint(root, 100);
      const write = await timed(() => writeRankShard(dir, 0, input));
      shardBytes = write.value.bytes;
      const commit = await timed(() => commitCheckpoint(dir, buildManifest(meta, [write.value]), opts));
      if (commit.value !== ckptDir) throw new Error(`bench: committed ${commit.value}`);
      return { write: write.s, commit: commit.s };
    };
    const saves = await rounds(() => saveRound(TRAINER_COMMIT));
    const writeS = median(saves.map((r) => r.write));
    const commitS = median(saves.map((r) => r.commit));
    const saveS = median(saves.map((r) => r.write + r.commit));
    const commitFullS = median((await rounds(() => saveRound({ verify: "full" }))).map((r) => r.commit));

    const coldS = median(await rounds(async () => resumeInNewProcess(root, file, "full")));
    const hereS = median(await rounds(async () => (await timed(() => resume(root, "full"))).s));
    const coldLocalS = median(await rounds(async () => resumeInNewProcess(root, file, "local")));
    const hereLocalS = median(await rounds(async () => (await timed(() => resume(root, "local"))).s));

    const rows = [
      { phase: "disk: 64 MiB writes + fsync", MBs: Math.round(ceiling.writeMBs) },
      { phase: "disk: cold sequential read", MBs: Math.round(ceiling.readMBs) },
      { phase: `save: write shard + commit ${TRAINER_COMMIT.verify}`, s: +saveS.toFixed(2), MBs: mb(saveS) },
      { phase: "  writeRankShard", s: +writeS.toFixed(2), MBs: mb(writeS) },
      { phase: `  commit (${TRAINER_COMMIT.verify})`, s: +commitS.toFixed(2), MBs: mb(commitS) },
      { phase: "commit (full)", s: +commitFullS.toFixed(2), MBs: mb(commitFullS) },
      { phase: 'resume after a crash (new process, cold cache), rank opens "full"', s: +coldS.toFixed(2), MBs: mb(coldS) },
      { phase: 'resume in the saving process, rank opens "full"', s: +hereS.toFixed(2), MBs: mb(hereS) },
      { phase: 'resume after a crash, rank opens "local" (the trainer\'s)', s: +coldLocalS.toFixed(2), MBs: mb(coldLocalS) },
      { phase: 'resume in the saving process, rank opens "local" (the trainer\'s)', s: +hereLocalS.toFixed(2), MBs: mb(hereLocalS) },
    ];
    const result = {
      date: new Date().toISOString(),
      node: process.version,
      cpu: cpus()[0]?.model ?? "unknown",
      cores: cpus().length,
      dir: tmpdir(),
      layers: LAYERS,
      rounds: ROUNDS,
      shardBytes,
      rows,
    };
    const out = join(fileURLToPath(new URL(".", import.meta.url)), "results");
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, "checkpoint.json"), JSON.stringify(result, null, 2) + "\n");
    console.log(`shard ${(shardBytes / 1e9).toFixed(2)} GB in ${tmpdir()}, ${cpus().length} cores, median of ${ROUNDS}`);
    console.table(rows);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

if (process.argv[2] === "--resume") {
  const t = await timed(() => resume(process.argv[3]!, process.argv[4] as "full" | "local"));
  console.log(t.s);
} else {
  await main();
}
