// The coordinator's side of checkpoints (models/checkpoint holds the format). A save: the
// coordinator opens a temporary folder for the step, every rank writes its shard into it and
// reports (saveShard), the DataActor gives its state as of the step, and the coordinator
// commits the manifest, which makes the checkpoint complete atomically and prunes to
// keep_last. A crash anywhere before the commit leaves the previous checkpoint the newest.
import type { JobConfig } from "../runtime/index.ts";
import type { MeshShape } from "../mesh/index.ts";
import { configFromHF, configToHF, readHFConfig } from "../models/index.ts";
import {
  buildManifest,
  commitCheckpoint,
  knownUnder,
  openCheckpoint,
  resolveResume,
  type HashRecord,
  type RankShardReport,
} from "../models/checkpoint/index.ts";
import { decodeState, encodeState, type DataState } from "../data/index.ts";
import type { ModelSpec } from "./model-spec.ts";

/** Where a resumed run continues: the checkpoint, its step and tokens, the data state (msgpack) for the DataActor. */
export interface ResumePoint {
  dir: string;
  step: number;
  tokens: number;
  data: Uint8Array;
  /** The shards' sha256 as this process verified them, for the ranks' load (they need not hash them again). */
  verified: HashRecord[];
}

/** `checkpoint.resume`: auto (the newest complete checkpoint, if any), never, or a folder. */
export async function findResume(cfg: JobConfig, note: (line: string) => void): Promise<ResumePoint | undefined> {
  // "local": a checkpoint this process saved or verified (a restart after a rank failure) is not read again.
  const dir = await resolveResume(cfg.checkpoint.dir, cfg.checkpoint.resume, {
    verify: "local",
    onSkip: (d, err) => note(`resume: passing over ${d}: ${err.message}`),
  });
  if (!dir) return undefined;
  // resolveResume has just hashed every shard of it and "local" remembers them: no second read.
  const ckpt = await openCheckpoint(dir, { verify: "local" });
  try {
    const data = ckpt.dataState as DataState | null;
    if (!data) throw new Error(`checkpoint ${dir} holds no data pipeline state; cannot resume the data where it was`);
    return { dir: ckpt.dir, step: ckpt.step, tokens: ckpt.manifest.tokensSeen, data: encodeState(data), verified: knownUnder(ckpt.dir) };
  } finally {
    await ckpt.close();
  }
}

/** The model's config.json as a checkpoint records it (exportHF writes it out). */
export async function modelConfigJson(spec: ModelSpec): Promise<Record<string, unknown>> {
  const config = spec.kind === "path" ? await readHFConfig(spec.path) : configFromHF(spec.hf, "model.config");
  return configToHF(config);
}

export interface CommitInput {
  step: number;
  tokens: number;
  mesh: MeshShape;
  config: JobConfig;
  model: Record<string, unknown>;
  reports: readonly RankShardReport[];
  /** The DataActor's state as of `step` (msgpack). */
  data: Uint8Array;
}

/**
 * Writes the manifest and publishes the checkpoint; returns its folder. Shards written by this
 * process (a rank in the coordinator's process) are not read back: their sha256 was taken of
 * the bytes as they went out. Shards from rank processes are re-hashed in full.
 */
export function commitJobCheckpoint(dir: string, c: CommitInput): Promise<string> {
  const manifest = buildManifest(
    { step: c.step, tokensSeen: c.tokens, mesh: c.mesh, config: c.config, model: c.model, data: decodeState(c.data), rng: null },
    c.reports,
  );
  return commitCheckpoint(dir, manifest, { keepLast: c.config.checkpoint.keep_last, verify: "local" });
}
