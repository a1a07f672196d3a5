// Shared by the multi-rank trainer tests: a small job (tiny.yaml's model at hidden 32, one
// layer, 64-token packs, over a byte-level tokenizer of 257 tokens so that the embedding, the
// collectives and the checkpoints are small: a step takes milliseconds), a single-rank
// in-process reference run, the `tessera` CLI as a child process, finding a rank process by
// its rank to kill it, and comparing two runs' final checkpoints (to a tolerance, or bit for bit).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig, type JobConfig } from "../../runtime/index.ts";
import { startTraining, type EvalRecord, type TrainRecord } from "../../actors/index.ts";
import { loadShard, openCheckpoint } from "../../models/index.ts";
import { SMALL, tempDir } from "./train-testkit.ts";

export const root = join(import.meta.dirname, "..", "..");
export const TINY = join(root, "configs/tiny.yaml");

/**
 * A byte-level BPE without merges (GPT-2's byte-to-character map): every UTF-8 byte is a
 * token, plus <|endoftext|> (id 256) as the end of each text.
 */
function byteTokenizer(): string {
  const dir = tempDir("tessera-bytetok-");
  const direct = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const vocab: Record<string, number> = {};
  let shifted = 0;
  for (let b = 0; b < 256; b++) vocab[String.fromCodePoint(direct(b) ? b : 256 + shifted++)] = b;
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  const eos = "<|endoftext|>";
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [{ id: 256, content: eos, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges: [] },
  };
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(json));
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ eos_token: eos, bos_token: null }));
  return dir;
}

/** SMALL over the byte tokenizer, no eval, no warmup to speak of; steps and checkpoints are the test's. */
export const MULTI = [
  ...SMALL,
  `data.tokenizer=${JSON.stringify(byteTokenizer())}`,
  "trainer.eval_every=0",
  "optimizer.schedule.warmup_steps=1",
  "trainer.log_every=1",
];

export function config(out: string, overrides: readonly string[]): JobConfig {
  return loadConfig(TINY, { overrides: [`output_dir=${JSON.stringify(out)}`, ...MULTI, ...overrides] });
}

export function records(out: string): (TrainRecord | EvalRecord)[] {
  return readFileSync(join(out, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as TrainRecord | EvalRecord);
}

export function trainRecords(out: string): TrainRecord[] {
  return records(out).filter((r): r is TrainRecord => r.kind === "train");
}

/** One rank in this process. */
export async function referenceRun(out: string, overrides: readonly string[]): Promise<TrainRecord[]> {
  let err = "";
  const run = await startTraining(config(out, overrides), { stderr: { write: (t: string) => void (err += t), isTTY: false } });
  const s = await run.done;
  assert.equal(s.state, "done", `${s.reason}\n${err}`);
  return trainRecords(out);
}

/** Same steps, and per step the loss and grad norm within `rtol` (relative). */
export function assertSameCurve(got: readonly TrainRecord[], want: readonly TrainRecord[], rtol: number): void {
  assert.deepEqual(got.map((r) => r.step), want.map((r) => r.step));
  got.forEach((r, i) => {
    const w = want[i]!;
    assert.equal(r.loss_tokens, w.loss_tokens, `step ${r.step}: the same global batch`);
    for (const k of ["loss", "grad_norm"] as const) {
      const a = r[k]!;
      const b = w[k]!;
      assert.ok(Math.abs(a - b) <= rtol * Math.abs(b), `step ${r.step} ${k}: ${a} vs ${b} (rtol ${rtol})`);
    }
  });
}

export interface CliRun {
  readonly pid: number;
  /** Resolves with the exit code and everything written to stderr. */
  readonly exit: Promise<{ code: number | null; stderr: string }>;
  /** Resolves when stderr has shown `pattern`. */
  waitFor(pattern: RegExp): Promise<void>;
}

/**
 * `tessera ARGS` as a child process (the bin, as a user runs it). `group`: in a process group
 * of its own, as a shell runs a foreground job (a terminal's Ctrl-C reaches the whole group).
 */
export function cli(args: readonly string[], o: { group?: boolean; timeoutMs?: number } = {}): CliRun {
  const child = spawn(process.execPath, [join(root, "actors/bin.mjs"), ...args], { cwd: root, stdio: ["ignore", "ignore", "pipe"], detached: o.group === true });
  const timeoutMs = o.timeoutMs ?? 120_000;
  let stderr = "";
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  child.stderr.on("data", (b: Buffer) => {
    stderr += b.toString();
    for (const w of waiters.splice(0)) {
      if (w.pattern.test(stderr)) w.resolve();
      else waiters.push(w);
    }
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const exit = new Promise<{ code: number | null; stderr: string }>((resolve) =>
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    }),
  );
  return {
    pid: child.pid!,
    exit,
    waitFor: (pattern) =>
      new Promise<void>((resolve, reject) => {
        if (pattern.test(stderr)) return resolve();
        waiters.push({ pattern, resolve });
        void exit.then(({ stderr: e }) => reject(new Error(`exited before stderr showed ${pattern}:\n${e}`)));
      }),
  };
}

/** The pid of the rank process of rank `rank` among the children of `parent`. */
export function rankPid(parent: number, rank: number): number {
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid !== parent) continue;
      const env = readFileSync(`/proc/${name}/environ`, "utf8").split("\0");
      if (env.includes(`TESSERA_RANK=${rank}`)) return Number(name);
    } catch {
      // gone meanwhile
    }
  }
  throw new Error(`no rank ${rank} process among the children of ${parent}`);
}

// The failure tests. Steps take milliseconds: 40 of them leave the kill, which lands a step
// or two after the first checkpoint, well inside the run.
const MAX_STEPS = 40;
export const FAILURE_STEPS = [`trainer.max_steps=${MAX_STEPS}`, "checkpoint.every=2"];
export const ALL_STEPS = Array.from({ length: MAX_STEPS }, (_, i) => i + 1);
/** The step the restarted ranks resumed from (a checkpoint at or after step 2). */
export function resumedStep(stderr: string): number {
  const m = /resumed from \S*step-0*(\d+) at step (\d+)/.exec(stderr);
  assert.ok(m, `no resume in:\n${stderr}`);
  assert.equal(m[1], m[2]);
  const step = Number(m[2]);
  assert.ok(step >= 2 && step % 2 === 0 && step < MAX_STEPS, `resumed at step ${step}`);
  return step;
}
export const sets = (xs: readonly string[]) => xs.flatMap((x) => ["--set", x]);

/** `tessera train` of FAILURE_STEPS steps under fsdp=2 (two rank processes), a checkpoint every 2 steps. */
export function trainFsdp2(out: string, extra: readonly string[], o: { group?: boolean } = {}) {
  return cli(["train", TINY, "-o", out, ...sets([...MULTI, ...FAILURE_STEPS, "mesh.fsdp=2", ...extra])], o);
}

/** How far one checkpoint's tensor is from another's: the largest |a - b|, and that over the reference's largest |b|. */
export interface TensorDiff {
  readonly name: string;
  readonly maxAbs: number;
  readonly maxRel: number;
}

/**
 * Every tensor of `want`'s checkpoint (parameters and optimizer buffers), read whole from both
 * with loadShard (which joins the shards of whatever mesh saved it), compared elementwise.
 * Both must hold the same tensors with the same shapes at the same step.
 */
export async function diffCheckpoints(got: string, want: string): Promise<TensorDiff[]> {
  const [a, b] = await Promise.all([openCheckpoint(got), openCheckpoint(want)]);
  try {
    assert.equal(a.step, b.step, "the same step");
    const names = Object.keys(b.manifest.tensors).sort();
    assert.deepEqual(Object.keys(a.manifest.tensors).sort(), names, "the same tensors");
    const out: TensorDiff[] = [];
    for (const name of names) {
      assert.deepEqual(a.entry(name).shape, b.entry(name).shape, `${name}: shape`);
      const [x, y] = await Promise.all([loadShard(a, name), loadShard(b, name)]);
      let maxAbs = 0;
      let scale = 0;
      for (let i = 0; i < y.length; i++) {
        // A NaN would compare as within any tolerance: count it as an infinite difference.
        const d = Math.abs(x[i]! - y[i]!);
        maxAbs = Math.max(maxAbs, Number.isNaN(d) ? Infinity : d);
        scale = Math.max(scale, Math.abs(y[i]!));
      }
      out.push({ name, maxAbs, maxRel: scale > 0 ? maxAbs / scale : maxAbs });
    }
    return out;
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
}

/** The final checkpoints of two runs agree tensor by tensor within `rtol` of each tensor's largest magnitude; the worst difference. */
export async function assertSameWeights(got: string, want: string, rtol: number): Promise<TensorDiff> {
  const diffs = await diffCheckpoints(got, want);
  const bad = diffs.filter((d) => !(d.maxRel <= rtol));
  assert.deepEqual(bad, [], `tensors beyond rtol ${rtol} of their largest magnitude`);
  return diffs.reduce((w, d) => (d.maxRel > w.maxRel ? d : w));
}

/** Two checkpoints hold the same tensors bit for bit (NaN payloads and -0 included), and the same optimizer, data and RNG state. */
export async function assertSameCheckpointBits(got: string, want: string): Promise<void> {
  const [a, b] = await Promise.all([openCheckpoint(got), openCheckpoint(want)]);
  try {
    assert.equal(a.step, b.step, "the same step");
    const names = Object.keys(b.manifest.tensors).sort();
    assert.deepEqual(Object.keys(a.manifest.tensors).sort(), names, "the same tensors");
    for (const name of names) {
      const [x, y] = await Promise.all([loadShard(a, name), loadShard(b, name)]);
      const xb = new Uint32Array(x.buffer, x.byteOffset, x.length);
      const yb = new Uint32Array(y.buffer, y.byteOffset, y.length);
      assert.equal(xb.length, yb.length, `${name}: length`);
      const i = xb.findIndex((v, k) => v !== yb[k]);
      assert.equal(i, -1, `${name}: first difference at element ${i}: ${x[i]} vs ${y[i]}`);
    }
    assert.deepEqual(a.manifest.optimizer, b.manifest.optimizer, "optimizer scalars (step counts)");
    assert.deepEqual(a.dataState, b.dataState, "data pipeline state");
    assert.deepEqual(a.rngState, b.rngState, "RNG state");
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
}
