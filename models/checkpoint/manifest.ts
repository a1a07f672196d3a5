// The manifest: the one JSON file (written last, by rank 0) that makes a checkpoint folder a
// checkpoint. It names every shard file with its size and sha256, and for every tensor its
// logical shape and which rank's file holds which flat range, so any mesh can load any part.
import { z } from "zod";
import { numel } from "./shard-spec.ts";

export const MANIFEST_FILE = "manifest.json";
export const FORMAT = "tessera-checkpoint";
export const FORMAT_VERSION = 1;

const count = z.int().min(0);

const ShardPieceSchema = z.strictObject({
  rank: count,
  /** Shard file (a name in the checkpoint folder). */
  file: z.string().min(1),
  start: count,
  end: count,
});

const TensorEntrySchema = z.strictObject({
  shape: z.array(count),
  /** Storage dtype in the shard files: fp32 master weights and optimizer state. */
  dtype: z.literal("F32"),
  /** Ordered by start; they tile [0, numel) exactly. */
  shards: z.array(ShardPieceSchema),
});

const FileEntrySchema = z.strictObject({
  rank: count,
  bytes: count,
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});

const OptimizerScalarsSchema = z.strictObject({
  /** Optimizer steps taken: what the LR schedule is indexed by on resume. */
  step: count,
  /** Per parameter: its update rule and its own update count (bias correction). */
  params: z.record(z.string(), z.strictObject({ algorithm: z.enum(["adamw", "muon"]), step: count })),
});

export const ManifestSchema = z.strictObject({
  format: z.literal(FORMAT),
  version: z.literal(FORMAT_VERSION),
  step: count,
  tokensSeen: count,
  createdAt: z.string(),
  mesh: z.strictObject({ dp: z.int().min(1), fsdp: z.int().min(1), sp: z.int().min(1) }),
  worldSize: z.int().min(1),
  /** The job config, as the job ran with it. */
  config: z.unknown(),
  /** The model's HF config.json object (what exportHF writes); null when not given. */
  model: z.record(z.string(), z.unknown()).nullable(),
  /** The data pipeline's state, tagged JSON (tagged-json.ts). */
  data: z.unknown(),
  /** RNG state, tagged JSON. */
  rng: z.unknown(),
  optimizer: OptimizerScalarsSchema.nullable(),
  tensors: z.record(z.string(), TensorEntrySchema),
  files: z.record(z.string(), FileEntrySchema),
});

export type CheckpointManifest = z.infer<typeof ManifestSchema>;
export type TensorEntry = z.infer<typeof TensorEntrySchema>;
export type ShardPiece = z.infer<typeof ShardPieceSchema>;
export type FileEntry = z.infer<typeof FileEntrySchema>;
export type OptimizerScalars = z.infer<typeof OptimizerScalarsSchema>;

/** The name under which an optimizer buffer of a parameter is stored. */
export function optimTensorName(param: string, buffer: string): string {
  return `optim.${param}.${buffer}`;
}

/**
 * Parses and checks a manifest: the schema, then that every tensor's pieces tile it exactly
 * and name files that the manifest lists for the same rank. `where` names the file in errors.
 */
export function parseManifest(json: unknown, where: string): CheckpointManifest {
  const r = ManifestSchema.safeParse(json);
  if (!r.success) {
    const issues = r.error.issues.slice(0, 5).map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`);
    throw new Error(`checkpoint: ${where} is not a valid manifest: ${issues.join("; ")}`);
  }
  const m = r.data;
  const { dp, fsdp, sp } = m.mesh;
  if (dp * fsdp * sp !== m.worldSize) throw new Error(`checkpoint: ${where}: mesh ${dp}x${fsdp}x${sp} does not make world size ${m.worldSize}`);
  for (const [file, f] of Object.entries(m.files)) {
    if (file.includes("/") || file.includes("\\") || file.startsWith(".")) throw new Error(`checkpoint: ${where}: bad shard file name ${JSON.stringify(file)}`);
    if (f.rank >= m.worldSize) throw new Error(`checkpoint: ${where}: file ${file} is rank ${f.rank}'s, outside world size ${m.worldSize}`);
  }
  for (const [name, t] of Object.entries(m.tensors)) {
    checkTiling(name, t, where);
    for (const p of t.shards) {
      const f = m.files[p.file];
      if (!f) throw new Error(`checkpoint: ${where}: tensor ${name} is in file ${p.file}, which the manifest does not list`);
      if (f.rank !== p.rank) throw new Error(`checkpoint: ${where}: tensor ${name}: file ${p.file} is rank ${f.rank}'s, the piece says rank ${p.rank}`);
    }
  }
  return m;
}

/** Pieces ordered by start, contiguous from 0 to numel, no overlap, no gap. */
export function checkTiling(name: string, t: TensorEntry, where: string): void {
  const n = numel(t.shape);
  let at = 0;
  for (const p of t.shards) {
    if (p.end <= p.start) throw new Error(`checkpoint: ${where}: tensor ${name}: empty or reversed piece [${p.start}, ${p.end}) of rank ${p.rank}`);
    if (p.start < at) throw new Error(`checkpoint: ${where}: tensor ${name}: rank ${p.rank}'s piece [${p.start}, ${p.end}) overlaps elements before ${at} (replicated tensors must be written by one replica only)`);
    if (p.start > at) throw new Error(`checkpoint: ${where}: tensor ${name}: no rank holds elements [${at}, ${p.start})`);
    at = p.end;
  }
  if (at !== n) throw new Error(`checkpoint: ${where}: tensor ${name}: no rank holds elements [${at}, ${n}) of [${t.shape.join(", ")}]`);
}
