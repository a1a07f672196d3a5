// A node's agent (address `node.<n>`, one per launcher): spawns this node's rank processes
// (rank-process.ts) when the job asks, supervises them with heartbeats, reports a death to
// the job actor, and stops them all when told. It never restarts a rank by itself: ranks
// blocked in collectives with a dead peer cannot be trusted, so the job restarts all of them
// together from the last checkpoint (launcher.ts).
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { defineActor, ProcessSupervisor, type ActorContext, type SupervisedProcess } from "../runtime/index.ts";
import { ADDRESS } from "./job.ts";
import { JobProtocol, NodeProtocol } from "./protocols.ts";

export interface NodeAgentOptions {
  node: number;
  /** Ranks this node runs at once: the CPU kernels' threads are shared among them. */
  nprocPerNode: number;
  /** Where the rank processes connect, and the job's NATS namespace. */
  natsUrl: string;
  natsJob: string;
  heartbeatMs: number;
  deadAfterMs: number;
  /** Called with the job's exit code when node 0 says the job is over. */
  onExit?: (code: number, reason: string) => void;
  log?: (line: string) => void;
}

/** What a rank process reads (rank-process.ts). */
export const RANK_ENV = {
  natsUrl: "TESSERA_NATS_URL",
  natsJob: "TESSERA_NATS_JOB",
  rank: "TESSERA_RANK",
  generation: "TESSERA_GENERATION",
} as const;

const RANK_SCRIPT = fileURLToPath(new URL("./rank-process.ts", import.meta.url));

/** CPU threads per rank: the cores shared among this node's ranks, at least one each. */
export function threadsPerRank(nprocPerNode: number, cores = availableParallelism()): number {
  return Math.max(1, Math.floor(cores / nprocPerNode));
}

export function nodeAgent(o: NodeAgentOptions) {
  return defineActor(NodeProtocol, async (ctx: ActorContext) => {
    const log = o.log ?? ((line: string) => void process.stderr.write(line + "\n"));
    const sup = await ProcessSupervisor.start(ctx.system, { address: `${ADDRESS.node(o.node)}.heartbeat` });
    ctx.onStop(() => sup.shutdown());
    const job = ctx.ref(ADDRESS.job, JobProtocol);
    const running = new Map<number, SupervisedProcess>();

    const stopAll = async () => {
      const ps = [...running.values()];
      running.clear();
      await Promise.all(ps.map((p) => p.stop()));
    };

    return {
      start: async ({ generation, ranks }) => {
        await stopAll();
        const threads = String(threadsPerRank(o.nprocPerNode));
        for (const rank of ranks) {
          const p = sup.spawn({
            id: `rank-${rank}`,
            script: RANK_SCRIPT,
            env: {
              [RANK_ENV.natsUrl]: o.natsUrl,
              [RANK_ENV.natsJob]: o.natsJob,
              [RANK_ENV.rank]: String(rank),
              [RANK_ENV.generation]: String(generation),
              TESSERA_CPU_THREADS: threads,
            },
            policy: { strategy: "stop" },
            heartbeat: { intervalMs: o.heartbeatMs, deadAfterMs: o.deadAfterMs },
            startTimeoutMs: 120_000,
            killGraceMs: 3000,
          });
          running.set(rank, p);
          p.once("dead", (d) => {
            if (running.get(rank) !== p) return;
            running.delete(rank);
            const how =
              d.reason === "exit"
                ? `exited (${d.signal ?? `code ${String(d.code)}`})`
                : d.reason === "heartbeat"
                  ? `sent no heartbeat for ${d.sinceLastBeatMs} ms`
                  : `sent no heartbeat within ${d.sinceLastBeatMs} ms of starting`;
            const reason = `rank ${rank} (pid ${String(d.pid)}, node ${o.node}) ${how}`;
            log(reason);
            // The job's step deadline still catches a death whose report is lost.
            job.ask({ type: "rankDied", generation, rank, reason }, { timeoutMs: 30_000 }).catch((err: unknown) => {
              log(`node ${o.node}: could not report that ${reason}: ${(err as Error).message}`);
            });
          });
        }
        await Promise.all(ranks.map((r) => running.get(r)?.ready() ?? Promise.reject(new Error(`rank ${r} died while starting`))));
        return { pids: ranks.map((r) => running.get(r)?.pid ?? -1) };
      },
      stop: async () => {
        await stopAll();
        return {};
      },
      exit: ({ code, reason }) => {
        // After the reply has gone: the launcher's exit tears this actor down.
        setImmediate(() => o.onExit?.(code, reason));
        return {};
      },
    };
  });
}
