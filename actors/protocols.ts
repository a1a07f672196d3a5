// The messages between the trainer's actors. Every command that changes training state
// carries its step number, so a retried command (after a reconnect, or from a restarted
// coordinator) is answered with the recorded result instead of running twice; that holds
// whatever the message id, unlike the runtime's id dedupe.
//
// Flow of one optimizer step (the coordinator drives; ranks pull their own batches):
//   coordinator ─stepInfo{step}──────────────► data    (tokens and loss tokens of the whole step)
//   coordinator ─microStep{step,micro,scale}─► rank×N  ─batch{step,micro,group}─► data
//   coordinator ─optimStep{step,lr,maxNorm}──► rank×N  (plan reduces gradients, clip, step)
//   coordinator ─commit{step}────────────────► data    (frees the step's batches, grants credit)
import { z } from "zod";
import { defineProtocol } from "../runtime/index.ts";

const step = z.int().min(1);
const index = z.int().min(0);
/** A loss may be NaN or infinite (a diverged step): that is reported, not a malformed reply. */
const lossValue = z.custom<number>((v) => typeof v === "number", "expected a number (NaN and infinities included)");
// Typed arrays of any backing buffer (z.instanceof would narrow them to ArrayBuffer-backed).
const int32s = z.custom<Int32Array>((v) => v instanceof Int32Array, "expected an Int32Array");
const bytes = z.custom<Uint8Array>((v) => v instanceof Uint8Array, "expected a Uint8Array");

/** A flat packed batch as data/ makes it (no padding; labels already shifted, -100 not counted). */
export const BatchSchema = z.object({
  tokens: int32s,
  positions: int32s,
  cu_seqlens: int32s,
  labels: int32s,
});
export type Batch = z.output<typeof BatchSchema>;

export const StepInfoSchema = z.object({
  step,
  /** Tokens of the step over every batch group and micro-batch. */
  tokens: z.int().min(0),
  /** Of those, tokens with a label: the denominator of the step's mean loss. */
  loss_tokens: z.int().min(0),
  /** Sum over the step's sequences of length squared: attention's share of the step's FLOPs (MFU). */
  seq_len_sq: z.number().min(0),
});
export type StepInfo = z.output<typeof StepInfoSchema>;

export const DataProtocol = defineProtocol("data", {
  /** Makes (or waits for) the step's batches and says how many tokens it holds. */
  stepInfo: { msg: z.object({ step }), reply: StepInfoSchema },
  /** Batch group `group`'s micro-batch `micro` of `step`; the same answer every time it is asked until committed. */
  batch: { msg: z.object({ step, micro: index, group: index }), reply: BatchSchema },
  /** Every rank finished `step`: its batches may go, and the next steps may be made. */
  commit: { msg: z.object({ step }), reply: z.object({ step }) },
  /** The pipeline's state just after `step`'s batches (msgpack, data/encodeState), for a checkpoint. */
  state: { msg: z.object({ step: z.int().min(0) }), reply: z.object({ step: z.int().min(0), state: bytes }) },
  /** Eval batch `index` of evaluation round `round` (a fresh read of the eval set per round); null past its end. */
  evalBatch: { msg: z.object({ round: z.int().min(0), index, group: index }), reply: BatchSchema.nullable() },
  /** The training pipeline's counters (records, bad records, fill). */
  stats: { msg: z.object({}), reply: z.record(z.string(), z.unknown()) },
});

export const MicroResultSchema = z.object({
  step,
  micro: index,
  /** Sum of the cross-entropy over this rank's counted tokens. */
  loss_sum: lossValue,
  count: z.int().min(0),
  tokens: z.int().min(0),
  data_wait_ms: z.number(),
  compute_ms: z.number(),
});
export type MicroResult = z.output<typeof MicroResultSchema>;

export const OptimResultSchema = z.object({
  step,
  /** The global gradient norm before clipping; null when it is NaN or infinite. */
  grad_norm: z.number().nullable(),
  clipped: z.boolean(),
  /** True when the norm was not finite: no update was applied, gradients were dropped. */
  skipped: z.boolean(),
  optim_ms: z.number(),
});
export type OptimResult = z.output<typeof OptimResultSchema>;

export const EvalResultSchema = z.object({
  /** False past the end of the eval set (nothing was computed). */
  done: z.boolean(),
  loss_sum: lossValue,
  count: z.int().min(0),
});
export type EvalResult = z.output<typeof EvalResultSchema>;

export const RankStatusSchema = z.object({
  rank: z.int().min(0),
  /** The last step whose optimizer command ran (0 before any). */
  step: z.int().min(0),
  micro_runs: z.int().min(0),
  optim_runs: z.int().min(0),
  live_tensors: z.int().min(0),
  live_bytes: z.number(),
  params: z.int().min(0),
  /** The device allocator's bytes when the rank runs on cuda; null on cpu. */
  cuda_memory: z.object({ allocated: z.number(), reserved: z.number(), peak: z.number() }).nullable(),
});
export type RankStatus = z.output<typeof RankStatusSchema>;

/** What a rank wrote into a checkpoint folder (models/checkpoint RankShardReport), for the commit. */
export const ShardReportSchema = z.object({
  rank: index,
  file: z.string(),
  bytes: z.int().min(0),
  sha256: z.string(),
  tensors: z.array(z.object({ name: z.string(), shape: z.array(index), start: index, end: index })),
  optimizer: z
    .object({ step: index, params: z.record(z.string(), z.object({ algorithm: z.enum(["adamw", "muon"]), step: index })) })
    .nullable(),
});

export const RankProtocol = defineProtocol("rank", {
  /** Pull the batch, forward and backward, add gradients scaled by `grad_scale` (1 / the step's loss tokens). */
  microStep: { msg: z.object({ step, micro: index, grad_scale: z.number().min(0) }), reply: MicroResultSchema },
  /** Reduce gradients (the plan), clip to `max_norm` (0: off), apply with `lr` unless non-finite, zero gradients. */
  optimStep: { msg: z.object({ step, lr: z.number().min(0), max_norm: z.number().min(0) }), reply: OptimResultSchema },
  /** Loss of eval batch `index` of round `round` (no gradients). */
  evalStep: { msg: z.object({ round: z.int().min(0), index }), reply: EvalResultSchema },
  /** Write this rank's shard of the checkpoint of `step` into `dir`. */
  saveShard: { msg: z.object({ step: z.int().min(0), dir: z.string().min(1) }), reply: z.object({ step: z.int().min(0), report: ShardReportSchema }) },
  /**
   * Replace weights and optimizer state with the checkpoint in `dir`; later commands continue after its step.
   * `verified`: the coordinator's records of the shards' sha256 (models/checkpoint hashed-here), so that a rank process on the same host does not hash them again.
   */
  load: {
    msg: z.object({
      step: z.int().min(0),
      dir: z.string().min(1),
      verified: z.array(z.object({ file: z.string().min(1), sha256: z.string().min(1), identity: z.string().min(1) })).optional(),
    }),
    reply: z.object({ step: z.int().min(0) }),
  },
  status: { msg: z.object({}), reply: RankStatusSchema },
});

export const RunSummarySchema = z.object({
  state: z.enum(["idle", "running", "done", "stopped", "failed"]),
  /** Optimizer steps completed (including resumed ones). */
  step: z.int().min(0),
  tokens: z.int().min(0),
  /** Why it ended: max_steps, max_tokens, stop requested, or the error. */
  reason: z.string(),
  last_loss: lossValue.nullable(),
});
export type RunSummary = z.output<typeof RunSummarySchema>;

export const CoordinatorProtocol = defineProtocol("coordinator", {
  /** Starts the trainer loop (once; a repeat is a no-op) and replies at once. */
  start: { msg: z.object({}), reply: RunSummarySchema },
  /** Finish the step in progress, write a final checkpoint, end the run. */
  stop: { msg: z.object({ reason: z.string().default("stop requested") }), reply: RunSummarySchema },
  status: { msg: z.object({}), reply: RunSummarySchema },
});

// Multi-rank jobs (launcher.ts). Node 0's launcher serves the job actor; every node's
// launcher serves a node agent that spawns and stops that node's rank processes.

/** A JSON object passed as it is (the resolved job config, a model spec, a rank layout): its own code validated it. */
const jsonObject = z.record(z.string(), z.unknown());

export const JobProtocol = defineProtocol("job", {
  /** A rank process of `generation` asks what to run: the resolved config, the model and its layout. */
  assign: {
    msg: z.object({ rank: index, generation: index }),
    reply: z.object({ generation: index, config: jsonObject, model: jsonObject, layout: jsonObject }),
  },
  /** Another node's launcher is up and serves its agent at `node.<node>`. */
  join: { msg: z.object({ node: z.int().min(1), nproc: z.int().min(1) }), reply: z.object({ nnodes: z.int().min(1) }) },
  /** Other nodes' launchers ask now and then: a node 0 that stops answering has gone. */
  ping: { msg: z.object({}), reply: z.object({}) },
  /** A rank process of `generation` died or stopped beating: the step in flight fails. */
  rankDied: { msg: z.object({ generation: index, rank: index, reason: z.string() }), reply: z.object({}) },
});

export const NodeProtocol = defineProtocol("node", {
  /** Spawns these ranks' processes for `generation`; replies once every one of them serves its RankActor. */
  start: { msg: z.object({ generation: index, ranks: z.array(index).min(1) }), reply: z.object({ pids: z.array(z.int()) }) },
  /** Stops this node's rank processes (SIGTERM, then SIGKILL after a grace). */
  stop: { msg: z.object({}), reply: z.object({}) },
  /** The job is over: the launcher exits with `code` after replying. */
  exit: { msg: z.object({ code: z.int().min(0), reason: z.string() }), reply: z.object({}) },
});
