// The CoordinatorActor: the trainer loop. It owns the schedule of a run and nothing heavy:
// per step it asks the DataActor how many loss tokens the step holds (the mean's
// denominator over every rank and micro-batch), sends grad_accum microSteps and one
// optimStep to every rank, commits the step to the DataActor, and writes the step's
// metrics; every eval_every steps it evaluates on the held-out data, every checkpoint.every
// steps (and at the end) it checkpoints. The loop runs beside the actor's mailbox, so
// `stop` and `status` are answered while a step is in flight; a stop takes effect after the
// step in progress, followed by the final checkpoint.
//
// Several ranks: evaluation runs on every rank (FSDP needs all of them to gather weights):
// eval batch `index` is one pack per batch group, each group's ranks take theirs, and the
// loss is summed over all. A checkpoint: the coordinator opens the folder, every rank writes
// its shard (saveShard), and the coordinator commits the manifest with every report (it plays
// rank 0's part of models/checkpoint's protocol).
import { performance } from "node:perf_hooks";
import { createSchedule } from "../models/optim/index.ts";
import { defineActor, type ActorContext, type JobConfig } from "../runtime/index.ts";
import type { MeshShape } from "../mesh/index.ts";
import { beginCheckpoint } from "../models/checkpoint/index.ts";
import { commitJobCheckpoint } from "./checkpointing.ts";
import { MetricsFile, type TrainRecord } from "./metrics.ts";
import { withPhase } from "./phases.ts";
import { Progress, type ProgressStream } from "./progress.ts";
import { StepMetrics, peakTflops } from "./step-metrics.ts";
import { CoordinatorProtocol, DataProtocol, RankProtocol, type RunSummary } from "./protocols.ts";

export interface CoordinatorOptions {
  config: JobConfig;
  /** Rank addresses, in rank order. */
  ranks: readonly string[];
  data: string;
  /** The resolved mesh and the model's config.json, recorded in checkpoints. */
  mesh: MeshShape;
  modelConfig: Record<string, unknown>;
  /** Where the run continues from (a checkpoint's step and tokens seen); absent: step 0. */
  resumed?: { step: number; tokens: number };
  /** The progress line and notes; default process.stderr. */
  stderr?: ProgressStream;
  /** Called once when the loop ends, however it ends. */
  onFinish?: (summary: RunSummary) => void;
  /** Called after each committed checkpoint with its folder. */
  onCheckpoint?: (dir: string, step: number) => void;
  /**
   * Fails the step in flight at once (a rank process died): without it the loop would wait
   * for the step deadline. The loop then ends "failed" with the signal's reason, writing no
   * checkpoint (the ranks' state cannot be trusted).
   */
  abort?: AbortSignal;
}

export function coordinatorActor(o: CoordinatorOptions) {
  return defineActor(CoordinatorProtocol, (ctx: ActorContext) => {
    const cfg = o.config;
    const t = cfg.trainer;
    const aborted = new Promise<never>((_, reject) => {
      const fail = () => reject(new Error(String(o.abort?.reason ?? "aborted")));
      if (o.abort?.aborted) fail();
      else o.abort?.addEventListener("abort", fail, { once: true });
    });
    aborted.catch(() => {});
    const guard = <T>(p: Promise<T>): Promise<T> => (o.abort ? Promise.race([p, aborted]) : p);
    const rankRefs = o.ranks.map((a) => ctx.ref(a, RankProtocol));
    const dataRef = ctx.ref(o.data, DataProtocol);
    // Every ask of the loop goes through guard(), so an abort fails whatever is in flight.
    const ranks = rankRefs.map((r) => ({ ask: ((m, opts) => guard(r.ask(m, opts))) as typeof r.ask }));
    const data = { ask: ((m, opts) => guard(dataRef.ask(m, opts))) as typeof dataRef.ask };
    const deadline = { timeoutMs: t.step_deadline_s * 1000 };
    const schedule = createSchedule(cfg.optimizer.schedule, { lr: cfg.optimizer.lr, maxSteps: t.max_steps });
    const progress = new Progress(o.stderr ?? process.stderr, t.max_steps, t.log_every);
    const metrics = new MetricsFile(`${cfg.output_dir}/metrics.jsonl`, o.resumed?.step);
    const stepMetrics = new StepMetrics({ job: cfg.job, model: o.modelConfig, peakTflops: peakTflops(cfg), devices: o.ranks.length });

    const s: RunSummary = { state: "idle", step: o.resumed?.step ?? 0, tokens: o.resumed?.tokens ?? 0, reason: "", last_loss: null };
    let stopReason: string | undefined;
    let started = false;

    const runLoop = async (): Promise<void> => {
      // elapsed_s counts from this process's start of the loop (a resumed run starts again at 0).
      const runStart = performance.now();
      const elapsed = () => (performance.now() - runStart) / 1000;
      const firstStep = s.step;
      let lastCheckpoint = s.step;
      const until = (): string | undefined => {
        if (s.step >= t.max_steps) return `max_steps (${t.max_steps}) reached`;
        if (t.max_tokens !== undefined && s.tokens >= t.max_tokens) return `max_tokens (${t.max_tokens}) reached`;
        return stopReason;
      };
      for (let why = until(); why === undefined; why = until()) {
        // In one process every ask is a chain of microtasks: without a turn of the event
        // loop per step, signals (Ctrl-C), timers and I/O would wait until the data needs a read.
        await new Promise((resolve) => setImmediate(resolve));
        if (stopReason !== undefined) break;
        const step = s.step + 1;
        const r = await withPhase("train.step", { "tessera.step": step }, () => trainStep(step, elapsed));
        s.step = step;
        s.tokens += r.tokens;
        s.last_loss = r.loss;
        metrics.write(r);
        stepMetrics.record(r);
        const done = step - firstStep;
        const eta = ((performance.now() - runStart) / 1000 / done) * Math.max(0, t.max_steps - step);
        progress.step(r, eta);
        if (t.eval_every > 0 && step % t.eval_every === 0) await evaluate(step, elapsed);
        if (cfg.checkpoint.every > 0 && step % cfg.checkpoint.every === 0) {
          await checkpoint(step);
          lastCheckpoint = step;
        }
      }
      s.reason = until()!;
      if (lastCheckpoint !== s.step) await checkpoint(s.step);
      const ds = await data.ask({ type: "stats" }, deadline);
      progress.note(`data: ${String(ds.records)} records read, ${String(ds.bad)} bad, ${String(ds.truncated)} truncated; packs ${(Number(ds.fill) * 100).toFixed(1)}% full`);
    };

    const trainStep = async (step: number, elapsed: () => number): Promise<TrainRecord> => {
      const start = performance.now();
      const info = await withPhase("data_wait", { step }, () => data.ask({ type: "stepInfo", step }, deadline));
      const dataWait = (performance.now() - start) / 1000;
      const gradScale = info.loss_tokens > 0 ? 1 / info.loss_tokens : 0;
      let lossSum = 0;
      let count = 0;
      for (let micro = 0; micro < t.grad_accum; micro++) {
        const rs = await Promise.all(ranks.map((rk) => rk.ask({ type: "microStep", step, micro, grad_scale: gradScale }, deadline)));
        for (const r of rs) {
          lossSum += r.loss_sum;
          count += r.count;
        }
      }
      const lr = schedule(step - 1);
      const opt = await Promise.all(ranks.map((rk) => rk.ask({ type: "optimStep", step, lr, max_norm: t.clip_grad_norm }, deadline)));
      await data.ask({ type: "commit", step }, deadline);
      const o0 = opt[0]!;
      if (o0.skipped) progress.note(`step ${step}: the gradient norm is not finite; the update was skipped`);
      const status = await ranks[0]!.ask({ type: "status" }, deadline);
      const stepS = (performance.now() - start) / 1000;
      return {
        kind: "train",
        step,
        loss: count > 0 ? lossSum / count : 0,
        lr,
        grad_norm: o0.grad_norm,
        skipped: o0.skipped,
        clipped: o0.clipped,
        tokens: info.tokens,
        loss_tokens: info.loss_tokens,
        total_tokens: s.tokens + info.tokens,
        tokens_per_s: info.tokens / stepS,
        step_s: stepS,
        data_wait_s: dataWait,
        elapsed_s: elapsed(),
        live_tensors: status.live_tensors,
        live_bytes: status.live_bytes,
        mfu: stepMetrics.mfu(status.params, info.tokens, info.seq_len_sq, stepS),
        memory: { live_bytes: status.live_bytes, cuda: status.cuda_memory },
      };
    };

    const evaluate = async (step: number, elapsed: () => number): Promise<void> => {
      const start = performance.now();
      let lossSum = 0;
      let count = 0;
      let batches = 0;
      await withPhase("eval", { step }, async () => {
        for (let index = 0; ; index++) {
          const rs = await Promise.all(ranks.map((rk) => rk.ask({ type: "evalStep", round: step, index }, deadline)));
          if (rs.every((r) => r.done)) break;
          for (const r of rs) {
            lossSum += r.loss_sum;
            count += r.count;
          }
          batches++;
        }
      });
      const evalLoss = count > 0 ? lossSum / count : Number.NaN;
      const evalS = (performance.now() - start) / 1000;
      metrics.write({ kind: "eval", step, eval_loss: evalLoss, eval_tokens: count, eval_batches: batches, eval_s: evalS, elapsed_s: elapsed() });
      progress.note(`eval at step ${step}: loss ${evalLoss.toFixed(4)} over ${count} tokens (${batches} batches, ${evalS.toFixed(1)} s)`);
    };

    const checkpoint = async (step: number): Promise<void> => {
      const start = performance.now();
      await withPhase("checkpoint", { step }, async () => {
        const dir = await beginCheckpoint(cfg.checkpoint.dir, step);
        const saved = await Promise.all(ranks.map((rk) => rk.ask({ type: "saveShard", step, dir }, deadline)));
        const { state } = await data.ask({ type: "state", step }, deadline);
        const where = await commitJobCheckpoint(dir, {
          step,
          tokens: s.tokens,
          mesh: o.mesh,
          config: cfg,
          model: o.modelConfig,
          reports: saved.map((r) => r.report),
          data: state,
        });
        o.onCheckpoint?.(where, step);
        progress.note(`checkpoint at step ${step}: ${where} (${((performance.now() - start) / 1000).toFixed(1)} s)`);
      });
    };

    const start = (): RunSummary => {
      if (started) return { ...s };
      started = true;
      s.state = "running";
      void runLoop().then(
        () => {
          s.state = stopReason !== undefined && s.reason === stopReason ? "stopped" : "done";
          o.onFinish?.({ ...s });
        },
        (err: unknown) => {
          progress.end();
          s.state = "failed";
          s.reason = err instanceof Error ? err.message : String(err);
          o.onFinish?.({ ...s });
        },
      );
      return { ...s };
    };

    return {
      start,
      stop: ({ reason }) => {
        stopReason ??= reason;
        return { ...s };
      },
      status: () => ({ ...s }),
    };
  });
}
