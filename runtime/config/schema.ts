// The job config: one zod schema for the whole file. Every object is strict (an unknown key
// is an error, so a typo never silently falls back to a default) except `model.config`,
// which holds Hugging Face config.json fields and so must accept that file's many keys.
//
// The schema's output is the resolved config: every default filled, derived values set
// (seeds, tokenizer, output folders), so that downstream code never re-derives them. The
// output parses again to itself, which lets a coordinator ship it to ranks as plain data.
import * as z from "zod";

const posInt = z.int().min(1);
const nonNegInt = z.int().min(0);
const path = z.string().min(1);

/** Fields of a Hugging Face config.json that Tessera reads; others pass through untouched. */
const HfModelConfig = z.looseObject({
  model_type: z.string().min(1),
  hidden_size: posInt.optional(),
  num_hidden_layers: posInt.optional(),
  num_attention_heads: posInt.optional(),
  num_key_value_heads: posInt.optional(),
  head_dim: posInt.optional(),
  intermediate_size: posInt.optional(),
  /** Absent: the tokenizer's size (added tokens included). */
  vocab_size: posInt.optional(),
  max_position_embeddings: posInt.optional(),
  rms_norm_eps: z.number().positive().optional(),
  rope_theta: z.number().positive().optional(),
  tie_word_embeddings: z.boolean().optional(),
  hidden_act: z.string().optional(),
});

const ModelSchema = z.strictObject({
  /** A Hugging Face model folder (config.json, safetensors); relative to the config file. */
  path: path.optional(),
  /** Inline config.json fields: a model trained from scratch. Exactly one of path / config. */
  config: HfModelConfig.optional(),
  /** Compute dtype. auto: bfloat16 on cuda, float32 on cpu (master weights are always fp32). */
  dtype: z.enum(["auto", "float32", "bfloat16"]).default("auto"),
  /** Activation checkpointing: none, or full (each decoder layer recomputes its forward in backward). */
  recompute: z.enum(["none", "full"]).default("none"),
  /** Seed of the weight init of a model built from `config`. Absent: trainer.seed. */
  init_seed: nonNegInt.optional(),
});

const DataSourceSchema = z.strictObject({
  /** A file, or a folder (Arrow: HF save_to_disk); relative to the file that names it. */
  path,
  format: z.enum(["jsonl", "json", "csv", "arrow", "parquet"]),
  /** Relative sampling weight among the sources. */
  weight: z.number().positive().default(1),
  /** Split of an HF DatasetDict folder (e.g. train). */
  split: z.string().min(1).optional(),
  /** Field holding the text of a plain-text record. */
  text_field: z.string().min(1).default("text"),
  /** When set, records are OpenAI-style chats read from this field (loss on assistant tokens only). */
  messages_field: z.string().min(1).optional(),
});

const EvalSchema = z.strictObject({
  /** Filled from `dataset: FILE.yaml` by the loader when that is what the file says. */
  sources: z.array(DataSourceSchema).min(1),
  /** Batches per evaluation; absent: the whole eval set. */
  max_batches: posInt.optional(),
});

const DataSchema = z.strictObject({
  /** Filled from `dataset: FILE.yaml` by the loader when that is what the file says. */
  sources: z.array(DataSourceSchema).min(1),
  /** A folder with tokenizer.json and tokenizer_config.json (HF layout). Absent: model.path. */
  tokenizer: path.optional(),
  /** Token budget of one packed sequence group (one micro batch's `tokens[T]` when not set otherwise). */
  packing_length: posInt.default(2048),
  packing_strategy: z.enum(["ffd", "best_fit", "balanced"]).default("ffd"),
  /** Records held in the shuffle buffer; 0 or 1: no shuffling. */
  shuffle_window: nonNegInt.default(10_000),
  /** A record longer than packing_length: cut to fit, or drop (counted and reported). */
  on_overlong: z.enum(["truncate", "drop"]).default("truncate"),
  /** A record that cannot be read: skip (reported with file and line, counted), or fail the job. */
  on_bad_record: z.enum(["skip", "fail"]).default("skip"),
  /** Tokenizer workers per data actor. */
  workers: posInt.default(1),
  /** Shuffle and mixing seed. Absent: trainer.seed. */
  seed: nonNegInt.optional(),
  eval: EvalSchema.optional(),
});

/** -1 on one dim: inferred from the world size. */
const meshDim = z.int().refine((v) => v >= 1 || v === -1, "expected an integer >= 1, or -1 to infer");

const MeshSchema = z.strictObject({
  dp: meshDim.default(1),
  fsdp: meshDim.default(-1),
  sp: meshDim.default(1),
});

const ScheduleSchema = z.strictObject({
  name: z.enum(["constant", "cosine", "wsd"]).default("cosine"),
  /** Linear warmup from 0 to lr. */
  warmup_steps: nonNegInt.default(0),
  /** wsd only: the fraction of max_steps spent in the final decay. */
  decay_fraction: z.number().gt(0).max(1).default(0.1),
  /** cosine / wsd: the lr at the end, as a fraction of lr. */
  min_lr_ratio: z.number().min(0).max(1).default(0.1),
});

const MuonSchema = z.strictObject({
  momentum: z.number().min(0).lt(1).default(0.95),
  nesterov: z.boolean().default(true),
  /** Newton-Schulz iterations of the orthogonalisation. */
  ns_steps: posInt.default(5),
});

const beta = z.number().min(0).lt(1);

const OptimizerSchema = z.strictObject({
  /** muon: Muon on 2-D hidden matrices, AdamW (lr, betas, eps below) on embeddings, head, norms. */
  name: z.enum(["adamw", "muon"]).default("adamw"),
  lr: z.number().positive().default(3e-4),
  betas: z.tuple([beta, beta]).default([0.9, 0.95]),
  eps: z.number().positive().default(1e-8),
  weight_decay: z.number().min(0).default(0.1),
  muon: MuonSchema.prefault({}),
  schedule: ScheduleSchema.prefault({}),
});

const TrainerSchema = z.strictObject({
  max_steps: posInt,
  /** Also stop once this many tokens were trained on (whichever comes first). */
  max_tokens: posInt.optional(),
  grad_accum: posInt.default(1),
  /** Tokens per rank per micro step, a multiple of data.packing_length. Absent: packing_length. */
  micro_batch_tokens: posInt.optional(),
  /** Global gradient-norm clip; 0 turns clipping off. */
  clip_grad_norm: z.number().min(0).default(1.0),
  /** Steps between evaluations; 0: never (needs data.eval when > 0). */
  eval_every: nonNegInt.default(0),
  log_every: posInt.default(10),
  seed: nonNegInt.default(42),
  /** Whole-job restarts from the last checkpoint before giving up. */
  max_failures: nonNegInt.default(3),
  /** A step that takes longer fails (ranks hung in a collective). */
  step_deadline_s: z.number().positive().default(600),
  heartbeat_ms: posInt.default(1000),
  /** A rank silent for this long is dead. */
  dead_after_ms: posInt.default(10_000),
});

const CheckpointSchema = z.strictObject({
  /** Absent: <output_dir>/checkpoints. */
  dir: path.optional(),
  /** Steps between checkpoints; 0: no periodic checkpoints (the final one is still written). */
  every: nonNegInt.default(500),
  keep_last: posInt.default(3),
  /** auto: resume from the newest checkpoint in dir if any; never; or a checkpoint folder. */
  resume: z.string().min(1).default("auto"),
});

const TelemetrySchema = z.strictObject({
  /** Where spans go. Metrics always go to <output_dir>/metrics.jsonl. */
  exporter: z.enum(["none", "otlp", "jsonl", "console"]).default("none"),
  /** OTLP/HTTP base URL (spans are posted to <endpoint>/v1/traces) or the full traces URL. */
  otlp_endpoint: z.url().default("http://localhost:4318"),
  otlp_headers: z.record(z.string(), z.string()).optional(),
  service_name: z.string().min(1).default("tessera"),
  /** jsonl exporter's file. Absent: <output_dir>/traces.jsonl. */
  jsonl_path: path.optional(),
  /**
   * Serve Prometheus metrics on this port (0: any free port). Absent: no endpoint. Training
   * metrics go to OpenTelemetry only through this endpoint (there is no OTLP metrics export).
   */
  prometheus_port: z.int().min(0).max(65_535).optional(),
  /**
   * Peak dense TFLOP/s of one device, the denominator of MFU. Absent: 989 on cuda (H100
   * SXM, bf16 dense); on cpu none is assumed and MFU is left out.
   */
  peak_tflops: z.number().positive().optional(),
});

const NatsSchema = z.strictObject({
  /**
   * A server URL, or several comma-separated (the NATS CLI's convention): list more than one
   * server of a cluster so that a job can start while one is down. Absent: the launcher starts
   * a local nats-server (only when more than one rank needs it). Split it with natsServers().
   */
  url: z
    .string()
    .regex(/^[^\s,]+(,[^\s,]+)*$/, "expected a URL or comma-separated URLs without spaces: nats://host:4222,nats://host2:4222")
    .optional(),
  /** The server's max_payload in bytes; larger messages are chunked. Absent: asked from the server. */
  max_payload: posInt.optional(),
});

const JobConfigShape = z.strictObject({
  /** Job name; a NATS subject token, so letters, digits, _ and - only. */
  job: z.string().regex(/^[A-Za-z0-9_-]+$/, "expected letters, digits, _ or - (it names NATS subjects)"),
  /** Absent: runs/<job>. Relative to the working directory. */
  output_dir: path.optional(),
  device: z.enum(["cpu", "cuda"]).default("cuda"),
  model: ModelSchema,
  data: DataSchema,
  mesh: MeshSchema.prefault({}),
  optimizer: OptimizerSchema.prefault({}),
  trainer: TrainerSchema,
  checkpoint: CheckpointSchema.prefault({}),
  telemetry: TelemetrySchema.prefault({}),
  nats: NatsSchema.prefault({}),
});

type Parsed = z.output<typeof JobConfigShape>;

function crossChecks(c: Parsed, ctx: z.RefinementCtx): void {
  const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: "custom", path, message });

  if ((c.model.path === undefined) === (c.model.config === undefined)) {
    issue(["model"], "give exactly one of model.path (a Hugging Face folder) or model.config (inline config.json fields)");
  }
  if (c.data.tokenizer === undefined && c.model.path === undefined) {
    issue(["data", "tokenizer"], "required when the model is given inline (model.config): a folder with tokenizer.json");
  }

  const inferred = (["dp", "fsdp", "sp"] as const).filter((k) => c.mesh[k] === -1);
  if (inferred.length > 1) {
    issue(["mesh"], `at most one of mesh.dp, mesh.fsdp, mesh.sp may be -1 (inferred); got -1 for ${inferred.map((k) => `mesh.${k}`).join(", ")}`);
  }

  const s = c.optimizer.schedule;
  const maxSteps = c.trainer.max_steps;
  if (s.warmup_steps > maxSteps) {
    issue(["optimizer", "schedule", "warmup_steps"], `must be <= trainer.max_steps (${s.warmup_steps} > ${maxSteps})`);
  } else if (s.name === "wsd" && s.warmup_steps + Math.ceil(s.decay_fraction * maxSteps) > maxSteps) {
    issue(
      ["optimizer", "schedule", "decay_fraction"],
      `warmup_steps + decay_fraction * trainer.max_steps exceeds trainer.max_steps (${s.warmup_steps} + ${Math.ceil(s.decay_fraction * maxSteps)} > ${maxSteps})`,
    );
  }

  const mbt = c.trainer.micro_batch_tokens;
  if (mbt !== undefined && mbt % c.data.packing_length !== 0) {
    issue(["trainer", "micro_batch_tokens"], `must be a multiple of data.packing_length (${mbt} % ${c.data.packing_length} != 0)`);
  }
  if (c.trainer.eval_every > 0 && c.data.eval === undefined) {
    issue(["trainer", "eval_every"], "evaluation needs data.eval");
  }
  if (c.trainer.dead_after_ms <= c.trainer.heartbeat_ms) {
    issue(["trainer", "dead_after_ms"], `must exceed trainer.heartbeat_ms (${c.trainer.dead_after_ms} <= ${c.trainer.heartbeat_ms})`);
  }
}

/** Fills the values that default to other values. Paths stay as written (the loader resolves them). */
function resolveDerived(c: Parsed) {
  const output_dir = c.output_dir ?? `runs/${c.job}`;
  return {
    ...c,
    output_dir,
    model: { ...c.model, init_seed: c.model.init_seed ?? c.trainer.seed },
    // crossChecks guarantees one of the two is present.
    data: { ...c.data, tokenizer: (c.data.tokenizer ?? c.model.path) as string, seed: c.data.seed ?? c.trainer.seed },
    trainer: { ...c.trainer, micro_batch_tokens: c.trainer.micro_batch_tokens ?? c.data.packing_length },
    checkpoint: { ...c.checkpoint, dir: c.checkpoint.dir ?? `${output_dir}/checkpoints` },
    telemetry: { ...c.telemetry, jsonl_path: c.telemetry.jsonl_path ?? `${output_dir}/traces.jsonl` },
  };
}

export const JobConfigSchema = JobConfigShape.superRefine(crossChecks).transform(resolveDerived);

/** The resolved job config (defaults and derived values filled). */
export type JobConfig = z.output<typeof JobConfigSchema>;
/** What a config file may say (before defaults). */
export type JobConfigInput = z.input<typeof JobConfigSchema>;
export type ModelSection = JobConfig["model"];
export type HfModelConfigFields = z.output<typeof HfModelConfig>;
export type DataSection = JobConfig["data"];
export type DataSource = z.output<typeof DataSourceSchema>;
export type EvalSection = NonNullable<DataSection["eval"]>;
export type MeshSection = JobConfig["mesh"];
export type OptimizerSection = JobConfig["optimizer"];
export type ScheduleSection = OptimizerSection["schedule"];
export type MuonSection = OptimizerSection["muon"];
export type TrainerSection = JobConfig["trainer"];
export type CheckpointSection = JobConfig["checkpoint"];
export type TelemetrySection = JobConfig["telemetry"];
export type NatsSection = JobConfig["nats"];

/** The server URLs of `nats.url` (undefined when absent: the launcher starts a local server). */
export function natsServers(nats: NatsSection): string[] | undefined {
  return nats.url?.split(",");
}
