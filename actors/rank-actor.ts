// The RankActor: one per device. It owns the model, its parallel plan (mesh/: DP, FSDP,
// Ulysses SP over the rank's collectives), the optimizer and its mesh coordinates, pulls its
// own batches (its batch group's) from the DataActor, and runs the commands the coordinator
// sends. Each command carries its step and is idempotent: a repeat of a
// command already run is answered with the recorded result and runs nothing, so retries
// after a lost reply never accumulate a gradient twice or step the optimizer twice.
import { performance } from "node:perf_hooks";
import { cudaMemoryStats, liveTensors, startCudaProfile, stopCudaProfile, summarizeCudaProfile } from "../native/index.ts";
import type { PackedBatch } from "../models/index.ts";
import { openCheckpoint, vouch, writeRankShard } from "../models/checkpoint/index.ts";
import type { GroupSource, RankLayout } from "../mesh/index.ts";
import { defineActor, type ActorContext, type JobConfig } from "../runtime/index.ts";
import { buildModel, type ModelSpec } from "./model-spec.ts";
import { createRankPlan, noCollectives, type RankPlan } from "./parallel-plan.ts";
import { DataProtocol, RankProtocol, type Batch, type EvalResult, type MicroResult, type OptimResult } from "./protocols.ts";
import { withPhase } from "./phases.ts";

export interface RankActorOptions {
  config: Pick<JobConfig, "device" | "model" | "optimizer" | "trainer">;
  model: ModelSpec;
  layout: RankLayout;
  /** The DataActor's address. */
  data: string;
  /** This rank's collectives (HostCollectives on its transport); not needed by a one-rank layout. */
  comm?: GroupSource;
}

/** Results of recent steps kept for repeated commands (older steps are done for good). */
const KEEP_STEPS = 4;

/**
 * TESSERA_CUDA_PROFILE_STEP=N: a cuda rank times every op of step N with CUDA events and prints
 * the device milliseconds per op, their sum and the step's wall time as one JSON line on stderr
 * (the events add host time, so that step runs a little slower than the others).
 */
const PROFILE_STEP = Number(process.env.TESSERA_CUDA_PROFILE_STEP ?? 0);

export function rankActor(o: RankActorOptions) {
  return defineActor(RankProtocol, async (ctx: ActorContext) => {
    const model = await buildModel(o.model, o.config);
    const plan = ((): RankPlan => {
      try {
        return createRankPlan(model, o.layout, o.comm ?? noCollectives, o.config);
      } catch (err) {
        model.dispose();
        throw err;
      }
    })();
    ctx.onStop(() => {
      plan.dispose();
      model.dispose();
    });
    const data = ctx.ref(o.data, DataProtocol);
    const askTimeoutMs = o.config.trainer.step_deadline_s * 1000;
    const group = o.layout.batchIndex;

    const micros = new Map<string, MicroResult>();
    const optims = new Map<number, OptimResult>();
    /** The last step whose optimizer command ran: commands for it or before are history. */
    let doneStep = 0;
    let microRuns = 0;
    let optimRuns = 0;
    let profileStart: number | undefined;

    const forget = () => {
      for (const k of optims.keys()) if (k <= doneStep - KEEP_STEPS) optims.delete(k);
      for (const [k, r] of micros) if (r.step <= doneStep - KEEP_STEPS) micros.delete(k);
    };
    const past = (step: number, what: string) =>
      new Error(`rank ${o.layout.rank}: ${what} for step ${step}, but step ${doneStep} is already done and its record is gone`);

    return {
      microStep: async ({ step, micro, grad_scale }) => {
        const key = `${step}/${micro}`;
        const seen = micros.get(key);
        if (seen) return seen;
        if (step <= doneStep) throw past(step, `microStep ${micro}`);
        if (step > doneStep + 1) throw new Error(`rank ${o.layout.rank}: microStep for step ${step} before step ${doneStep + 1}'s optimStep`);
        const t0 = performance.now();
        // A profiled step that failed before its optimizer step leaves the profile running: end it.
        if (profileStart !== undefined && step !== PROFILE_STEP) {
          stopCudaProfile();
          profileStart = undefined;
        }
        if (step === PROFILE_STEP && micro === 0 && o.config.device === "cuda") {
          startCudaProfile();
          profileStart = t0;
        }
        const batch = await withPhase("data_wait", { step, micro }, () => data.ask({ type: "batch", step, micro, group }, { timeoutMs: askTimeoutMs }));
        const t1 = performance.now();
        const r = await withPhase("forward_backward", { step, micro, tokens: batch.tokens.length }, () => plan.microStep(toModelBatch(batch), grad_scale));
        const result: MicroResult = {
          step,
          micro,
          loss_sum: r.lossSum,
          count: r.count,
          tokens: batch.tokens.length,
          data_wait_ms: t1 - t0,
          compute_ms: performance.now() - t1,
        };
        micros.set(key, result);
        microRuns++;
        return result;
      },

      optimStep: async ({ step, lr, max_norm }) => {
        const seen = optims.get(step);
        if (seen) return seen;
        if (step <= doneStep) throw past(step, "optimStep");
        const accumulated = [...micros.values()].filter((m) => m.step === step).length;
        if (step > doneStep + 1 || accumulated !== o.config.trainer.grad_accum) {
          throw new Error(`rank ${o.layout.rank}: optimStep for step ${step} after ${accumulated} of its ${o.config.trainer.grad_accum} micro-batches (last done step ${doneStep})`);
        }
        const t0 = performance.now();
        const result = await withPhase("optimizer", { step }, async () => {
          await plan.finishGradients();
          return plan.optimStep(lr, max_norm);
        });
        const r: OptimResult = {
          step,
          grad_norm: result.clip.finite ? result.norm : null,
          clipped: result.clip.clipped,
          skipped: !result.clip.finite,
          optim_ms: performance.now() - t0,
        };
        optims.set(step, r);
        if (step === PROFILE_STEP && profileStart !== undefined) {
          const { device_ms, ops } = summarizeCudaProfile(stopCudaProfile());
          const line = { rank: o.layout.rank, profile_step: step, wall_ms: +(performance.now() - profileStart).toFixed(3), device_ms, ops };
          process.stderr.write(JSON.stringify(line) + "\n");
          profileStart = undefined;
        }
        doneStep = step;
        optimRuns++;
        forget();
        return r;
      },

      evalStep: async ({ round, index }): Promise<EvalResult> => {
        const batch = await data.ask({ type: "evalBatch", round, index, group }, { timeoutMs: askTimeoutMs });
        if (!batch) return { done: true, loss_sum: 0, count: 0 };
        const r = await withPhase("eval", { round, index }, () => plan.evalLoss(toModelBatch(batch)));
        return { done: false, loss_sum: r.lossSum, count: r.count };
      },

      saveShard: async ({ step, dir }) => {
        if (step !== doneStep) throw new Error(`rank ${o.layout.rank}: asked to save step ${step}, but it holds step ${doneStep}`);
        const report = await withPhase("checkpoint", { step }, () => writeRankShard(dir, o.layout.rank, plan.checkpointShard()));
        return { step, report };
      },

      load: async ({ step, dir, verified }) => {
        // "local": a shard this process, or the coordinator that sent `verified` (findResume), has
        // verified or written is not read again while unchanged; others are.
        if (verified) vouch(dir, verified);
        const ckpt = await openCheckpoint(dir, { verify: "local" });
        try {
          if (ckpt.step !== step) throw new Error(`rank ${o.layout.rank}: ${dir} holds step ${ckpt.step}, not ${step}`);
          await plan.loadCheckpoint(ckpt);
        } finally {
          await ckpt.close();
        }
        plan.zeroGrad();
        micros.clear();
        optims.clear();
        doneStep = step;
        return { step };
      },

      status: () => {
        const live = liveTensors();
        const cuda = o.config.device === "cuda" ? cudaMemoryStats() : null;
        return {
          rank: o.layout.rank,
          step: doneStep,
          micro_runs: microRuns,
          optim_runs: optimRuns,
          live_tensors: live.count,
          live_bytes: live.bytes,
          params: plan.modelElements,
          cuda_memory: cuda && { allocated: cuda.allocated, reserved: cuda.reserved, peak: cuda.peak },
        };
      },
    };
  });
}

function toModelBatch(b: Batch): PackedBatch {
  return { tokens: b.tokens, positions: b.positions, cuSeqlens: b.cu_seqlens, labels: b.labels };
}
