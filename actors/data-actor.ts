// The DataActor: the data pipeline (data/) behind a message interface, pulled by ranks.
//
// Steps are made in order, each as grad_accum micro-batches per batch group (a micro-batch
// is micro_batch_tokens / packing_length packed batches laid end to end). Flow control is
// by credit: the actor makes at most `prefetchSteps` steps beyond the last committed one,
// so a slow trainer holds a bounded number of batches, and a fast pipeline works ahead
// while ranks compute. A step's batches stay until the coordinator commits it, so a rank
// that restarts and asks again for the same (step, micro) gets the same batch.
//
// Checkpoints need the pipeline's state as of a step, but the pipeline has usually read
// ahead; so the state is taken after each step is made and kept until that step is older
// than the committed one.
import type { ActorContext, DataSection } from "../runtime/index.ts";
import { decodeState, encodeState, DataPipeline, type DataOptions, type DataState, type PackedBatch } from "../data/index.ts";
import { defineActor } from "../runtime/index.ts";
import { DataProtocol, type Batch, type StepInfo } from "./protocols.ts";

export interface DataActorOptions {
  data: DataSection;
  gradAccum: number;
  /** Packed batches per micro-batch: micro_batch_tokens / packing_length. */
  packsPerMicro: number;
  /** Batch groups per step: dp * fsdp (ranks of one sequence-parallel group share a batch). */
  groups: number;
  /**
   * Ulysses splits a batch's tokens evenly over its sp group: each micro-batch is made a
   * multiple of this many tokens (mesh.sp) by one extra sequence whose labels are all -100.
   * Attention is per sequence and the pad carries no loss, so it changes no loss and no
   * gradient. Default 1 (none).
   */
  tokenMultiple?: number;
  /** Steps made ahead of the committed one. Default 2. */
  prefetchSteps?: number;
  /** Resume: the state that data.state gave for step `step` (msgpack bytes). */
  resume?: { step: number; state: Uint8Array };
  /** Reports (bad records, end of data). Default: stderr. */
  log?: (line: string) => void;
}

interface MadeStep {
  info: StepInfo;
  /** [micro][group] */
  micros: Batch[][];
  state: DataState;
}

/** The data pipeline options a job config asks for (also used by `tessera data preview`). */
export function pipelineOptions(d: DataSection, o: { repeat: boolean; groups: number; sources?: DataSection["sources"] }): DataOptions {
  return {
    sources: o.sources ?? d.sources,
    tokenizer: d.tokenizer,
    packingLength: d.packing_length,
    packingStrategy: d.packing_strategy,
    shuffleWindow: d.shuffle_window,
    onOverlong: d.on_overlong,
    onBadRecord: d.on_bad_record,
    workers: d.workers,
    seed: d.seed,
    repeat: o.repeat,
    shard: { index: 0, count: o.groups },
  };
}

export function dataActor(o: DataActorOptions) {
  const prefetch = o.prefetchSteps ?? 2;
  const multiple = o.tokenMultiple ?? 1;
  const log = o.log ?? ((line: string) => void process.stderr.write(line + "\n"));

  return defineActor(DataProtocol, async (ctx: ActorContext) => {
    const startStep = o.resume?.step ?? 0;
    const onBadRecord = (b: { file: string; line?: number; row?: number; reason: string }) =>
      log(`data: bad record at ${b.file}${b.line !== undefined ? `:${b.line}` : b.row !== undefined ? ` row ${b.row}` : ""}: ${b.reason}`);
    const pipeline = await DataPipeline.open(pipelineOptions(o.data, { repeat: true, groups: o.groups }), {
      ...(o.resume ? { state: decodeState(o.resume.state) } : {}),
      onBadRecord,
    });
    ctx.onStop(() => pipeline.close());

    const made = new Map<number, MadeStep>();
    const states = new Map<number, DataState>([[startStep, pipeline.state()]]);
    let committed = startStep;
    let lastMade = startStep;
    // Steps are made one at a time, in order: each is one link of this chain, and `pending`
    // holds the link of each step asked for or worked ahead on but not yet made.
    let chain: Promise<void> = Promise.resolve();
    let queuedTo = startStep;
    const pending = new Map<number, Promise<void>>();
    let producerError: unknown;

    const makeNext = async (): Promise<void> => {
      if (producerError !== undefined) throw producerError;
      const step = lastMade + 1;
      const micros: Batch[][] = [];
      let tokens = 0;
      let lossTokens = 0;
      let seqLenSq = 0;
      for (let m = 0; m < o.gradAccum; m++) {
        const packs: PackedBatch[][] = Array.from({ length: o.groups }, () => []);
        for (let k = 0; k < o.packsPerMicro; k++) {
          const group = await pipeline.nextGroup();
          if (!group) throw new Error(`data: the training data ended while making step ${step}`);
          group.forEach((b, g) => packs[g]!.push(b));
        }
        const micro = packs.map(concatBatches);
        for (const b of micro) {
          tokens += b.tokens.length;
          for (const l of b.labels) if (l !== -100) lossTokens++;
          for (let i = 1; i < b.cu_seqlens.length; i++) seqLenSq += (b.cu_seqlens[i]! - b.cu_seqlens[i - 1]!) ** 2;
        }
        micros.push(micro.map((b) => padToMultiple(b, multiple)));
      }
      const state = pipeline.state();
      made.set(step, { info: { step, tokens, loss_tokens: lossTokens, seq_len_sq: seqLenSq }, micros, state });
      states.set(step, state);
      pending.delete(step);
      lastMade = step;
    };

    const queueTo = (target: number): void => {
      while (queuedTo < target) {
        queuedTo++;
        const link = chain.then(makeNext);
        link.catch(() => {}); // surfaced to whoever awaits this step
        pending.set(queuedTo, link);
        chain = link.catch((err: unknown) => {
          producerError ??= err;
        });
      }
    };

    /** Resolves once `step` is made (asking for it grants the credit to make it). */
    const ensure = async (step: number): Promise<void> => {
      if (producerError !== undefined) throw producerError;
      if (step <= committed) throw new Error(`data: step ${step} is already committed (committed: ${committed})`);
      if (step > committed + 1 + prefetch) {
        throw new Error(`data: step ${step} is beyond the credit window (committed ${committed}, prefetch ${prefetch})`);
      }
      queueTo(step);
      await pending.get(step);
    };

    /** Works ahead, up to the credit window, while ranks compute; errors surface on the next ask. */
    const fill = (): void => {
      if (producerError === undefined) queueTo(committed + 1 + prefetch);
    };

    const stepOf = async (step: number): Promise<MadeStep> => {
      await ensure(step);
      const s = made.get(step);
      if (!s) throw new Error(`data: step ${step} is not held (committed: ${committed})`);
      return s;
    };

    let evalRound = -1;
    let evalPipeline: DataPipeline | undefined;
    let evalEnded = false;
    // A round's batches from index evalBase on: ranks ask index by index in lockstep (the
    // coordinator starts index i+1 only when every rank has had i), so older ones are dropped
    // and an eval set never sits in memory whole.
    let evalBase = 0;
    const evalBatches: PackedBatch[][] = [];
    ctx.onStop(() => evalPipeline?.close());

    return {
      stepInfo: async ({ step }) => {
        const s = await stepOf(step);
        fill();
        return s.info;
      },
      batch: async ({ step, micro, group }) => {
        if (micro >= o.gradAccum) throw new Error(`data: micro ${micro} out of range (grad_accum ${o.gradAccum})`);
        if (group >= o.groups) throw new Error(`data: batch group ${group} out of range (${o.groups} groups)`);
        const s = await stepOf(step);
        return s.micros[micro]![group]!;
      },
      commit: ({ step }) => {
        if (step > lastMade) throw new Error(`data: cannot commit step ${step}: only ${lastMade} were made`);
        committed = Math.max(committed, step);
        for (const k of made.keys()) if (k <= committed) made.delete(k);
        for (const k of states.keys()) if (k < committed) states.delete(k);
        fill();
        return { step };
      },
      state: ({ step }) => {
        const s = states.get(step);
        if (!s) throw new Error(`data: no state held for step ${step} (committed ${committed}, made ${lastMade})`);
        return { step, state: encodeState(s) };
      },
      evalBatch: async ({ round, index, group }) => {
        const ev = o.data.eval;
        if (!ev) throw new Error("data: no eval data (data.eval)");
        if (group >= o.groups) throw new Error(`data: batch group ${group} out of range (${o.groups} groups)`);
        if (ev.max_batches !== undefined && index >= ev.max_batches) return null;
        if (round !== evalRound) {
          await evalPipeline?.close();
          evalPipeline = await DataPipeline.open(
            { ...pipelineOptions(o.data, { repeat: false, groups: o.groups, sources: ev.sources }), workers: 0 },
            { onBadRecord },
          );
          evalRound = round;
          evalEnded = false;
          evalBase = 0;
          evalBatches.length = 0;
        }
        if (index < evalBase) throw new Error(`data: eval batch ${index} of round ${round} was already served and dropped`);
        while (evalBase < index - 1 && evalBatches.length > 0) {
          evalBatches.shift();
          evalBase++;
        }
        while (!evalEnded && evalBase + evalBatches.length <= index) {
          const g = await evalPipeline!.nextGroup();
          if (g) evalBatches.push(g);
          else {
            evalEnded = true;
            await evalPipeline!.close();
            evalPipeline = undefined;
          }
        }
        const b = evalBatches[index - evalBase]?.[group];
        return b ? padToMultiple(b, multiple) : null;
      },
      stats: () => ({ ...pipeline.stats(), committed, made: lastMade }),
    };
  });
}

/**
 * Appends one sequence of `multiple - T % multiple` tokens (token 0, positions from 0, labels
 * -100) when T is not a multiple; the batch itself when it is.
 */
export function padToMultiple(b: Batch, multiple: number): Batch {
  const T = b.tokens.length;
  const pad = (multiple - (T % multiple)) % multiple;
  if (pad === 0) return b;
  const grow = (a: Int32Array, fill: (i: number) => number) => {
    const out = new Int32Array(T + pad);
    out.set(a);
    for (let i = 0; i < pad; i++) out[T + i] = fill(i);
    return out;
  };
  const cu = new Int32Array(b.cu_seqlens.length + 1);
  cu.set(b.cu_seqlens);
  cu[b.cu_seqlens.length] = T + pad;
  return { tokens: grow(b.tokens, () => 0), positions: grow(b.positions, (i) => i), labels: grow(b.labels, () => -100), cu_seqlens: cu };
}

/** Lays packed batches end to end (cu_seqlens shifted), one micro-batch. */
export function concatBatches(parts: readonly PackedBatch[]): Batch {
  if (parts.length === 1) return parts[0]!;
  const T = parts.reduce((a, b) => a + b.tokens.length, 0);
  const S = parts.reduce((a, b) => a + b.cu_seqlens.length - 1, 0);
  const out: Batch = {
    tokens: new Int32Array(T),
    positions: new Int32Array(T),
    labels: new Int32Array(T),
    cu_seqlens: new Int32Array(S + 1),
  };
  let t = 0;
  let s = 0;
  for (const b of parts) {
    out.tokens.set(b.tokens, t);
    out.positions.set(b.positions, t);
    out.labels.set(b.labels, t);
    for (let i = 1; i < b.cu_seqlens.length; i++) out.cu_seqlens[s + i] = t + b.cu_seqlens[i]!;
    t += b.tokens.length;
    s += b.cu_seqlens.length - 1;
  }
  return out;
}
