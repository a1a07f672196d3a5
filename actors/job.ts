// A training job on one machine, one rank, every actor in this process: what `tessera train`
// runs for a world of one, over the in-process transport. The actors and their messages are
// the ones a multi-rank job (launcher.ts) runs over NATS; only the transport and where each
// actor lives change (a test runs this same job with every message over a NATS server).
import { mkdirSync } from "node:fs";
import { DeviceMesh } from "../mesh/index.ts";
import { ActorSystem, InProcTransport, type JobConfig, type Transport } from "../runtime/index.ts";
import { findResume, modelConfigJson, type ResumePoint } from "./checkpointing.ts";
import { coordinatorActor, type CoordinatorOptions } from "./coordinator-actor.ts";
import { dataActor, type DataActorOptions } from "./data-actor.ts";
import { resolveModelSpec } from "./model-spec.ts";
import type { ProgressStream } from "./progress.ts";
import type { RunSummary } from "./protocols.ts";
import { CoordinatorProtocol } from "./protocols.ts";
import { rankActor } from "./rank-actor.ts";

export interface TrainOptions {
  /** Where the progress line and notes go; default process.stderr. */
  stderr?: ProgressStream;
  /** Carries the actors' messages; default a fresh in-process one. A given one is left open (its owner closes it). */
  transport?: Transport;
}

export interface TrainingRun {
  readonly system: ActorSystem;
  /** Resolves when the loop ends (done, stopped or failed), after the actors are shut down. */
  readonly done: Promise<RunSummary>;
  /** Finish the step in progress, checkpoint, end. */
  stop(reason?: string): Promise<void>;
}

export const ADDRESS = {
  coordinator: "coordinator",
  data: "data",
  rank: (r: number) => `rank.${r}`,
  /** Multi-rank jobs: node 0's job actor, and each node's agent (launcher.ts, node-agent.ts). */
  job: "job",
  node: (n: number) => `node.${n}`,
} as const;

export async function startTraining(cfg: JobConfig, o: TrainOptions = {}): Promise<TrainingRun> {
  const mesh = singleRankMesh(cfg);
  mkdirSync(cfg.output_dir, { recursive: true });
  const stderr = o.stderr ?? process.stderr;
  const note = (line: string) => void stderr.write(line + "\n");

  const resumed = await findResume(cfg, note);
  const model = resolveModelSpec(cfg);
  const modelConfig = await modelConfigJson(model);

  // Big replies (batches) are remembered per message id for dedupe; the trainer's commands
  // are idempotent by step, so a short memory suffices.
  const transport = o.transport ?? new InProcTransport();
  const closeTransport = () => (o.transport ? Promise.resolve() : transport.close());
  const system = new ActorSystem({ transport, name: "trainer", dedupeCapacity: 64 });
  let finish!: (s: RunSummary) => void;
  const finished = new Promise<RunSummary>((r) => (finish = r));
  try {
    const t = cfg.trainer;
    await system.spawn(ADDRESS.data, dataActor(dataOptions(cfg, mesh, resumed, note)));
    const ranks: string[] = [];
    for (const layout of mesh.layouts()) {
      const address = ADDRESS.rank(layout.rank);
      const rank = await system.spawn(
        address,
        rankActor({ config: cfg, model, layout, data: ADDRESS.data }),
      );
      if (resumed) await rank.ask({ type: "load", step: resumed.step, dir: resumed.dir, verified: resumed.verified }, { timeoutMs: t.step_deadline_s * 1000 });
      ranks.push(address);
    }
    if (resumed) note(`resumed from ${resumed.dir} at step ${resumed.step}`);
    const coordinator = await system.spawn(
      ADDRESS.coordinator,
      coordinatorActor(coordinatorOptions(cfg, { ranks, mesh, modelConfig, stderr, resumed, onFinish: finish })),
    );
    await coordinator.ask({ type: "start" });
  } catch (err) {
    await system.shutdown();
    await closeTransport();
    throw err;
  }

  const coordinator = system.ref(ADDRESS.coordinator, CoordinatorProtocol);
  const done = finished.then(async (summary) => {
    await system.shutdown();
    await closeTransport();
    return summary;
  });
  return {
    system,
    done,
    stop: async (reason = "stop requested") => {
      // A stop that arrives while the run is already shutting down has nothing left to stop.
      await coordinator.ask({ type: "stop", reason }).catch(() => undefined);
    },
  };
}

/** The DataActor's options, as this one-rank job and each generation of a launched one (launcher.ts) build them. */
export function dataOptions(cfg: JobConfig, mesh: DeviceMesh, resumed: ResumePoint | undefined, log: (line: string) => void): DataActorOptions {
  return {
    data: cfg.data,
    gradAccum: cfg.trainer.grad_accum,
    packsPerMicro: cfg.trainer.micro_batch_tokens / cfg.data.packing_length,
    groups: mesh.layout(0).batchCount,
    tokenMultiple: mesh.shape.sp,
    log,
    ...(resumed ? { resume: { step: resumed.step, state: resumed.data } } : {}),
  };
}

/** What the coordinator's options are made of, besides the config. */
export interface CoordinatorParts {
  /** Rank addresses, in rank order. */
  ranks: readonly string[];
  mesh: DeviceMesh;
  modelConfig: Record<string, unknown>;
  stderr: ProgressStream;
  resumed: ResumePoint | undefined;
  onFinish: (summary: RunSummary) => void;
}

/** The CoordinatorActor's options, as both build them; a launched generation adds its supervision's onCheckpoint and abort. */
export function coordinatorOptions(cfg: JobConfig, o: CoordinatorParts): CoordinatorOptions {
  return {
    config: cfg,
    ranks: o.ranks,
    data: ADDRESS.data,
    stderr: o.stderr,
    mesh: o.mesh.shape,
    modelConfig: o.modelConfig,
    onFinish: o.onFinish,
    ...(o.resumed ? { resumed: { step: o.resumed.step, tokens: o.resumed.tokens } } : {}),
  };
}

function singleRankMesh(cfg: JobConfig): DeviceMesh {
  try {
    return new DeviceMesh(cfg.mesh, 1);
  } catch (err) {
    throw new Error(`${(err as Error).message}: startTraining runs one rank in this process (several: launch(), launcher.ts)`);
  }
}
