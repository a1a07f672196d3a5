// Multi-rank jobs: one launcher per node, ranks as child processes, every message over NATS.
//
// Node 0's launcher hosts the job actor (address `job`), the DataActor and the
// CoordinatorActor; every launcher (node 0's too) hosts a node agent (`node.<n>`) that
// spawns and supervises its node's rank processes. Ranks are laid out node by node: node n
// runs ranks [n*P, (n+1)*P). The mesh layout is computed once, here, and each rank process
// gets its layout and the resolved config from the job actor when it starts.
//
// Failures (the DESIGN's torchelastic model): a rank process that exits or stops beating is
// reported by its node agent; the job aborts the step in flight, stops every rank (SIGTERM
// aborts their collectives), and starts a new generation of all ranks that resumes from the
// last complete checkpoint (or from scratch when there is none). A rank hung in a collective
// fails its step at trainer.step_deadline_s (the collectives' timeout and the coordinator's
// ask deadline), which fails the step the same way. After trainer.max_failures restarts the
// next failure ends the job as failed, with the reason. metrics.jsonl stays one record per
// step: a resumed generation drops the records after its checkpoint's step (MetricsFile).
import { mkdirSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { DeviceMesh, type RankLayout } from "../mesh/index.ts";
import { ActorSystem, defineActor, NatsTransport, NoResponderError, AskTimeoutError, type JobConfig } from "../runtime/index.ts";
import { findResume, modelConfigJson } from "./checkpointing.ts";
import { coordinatorActor } from "./coordinator-actor.ts";
import { dataActor } from "./data-actor.ts";
import { ADDRESS, coordinatorOptions, dataOptions } from "./job.ts";
import { startLocalNats, type LocalNats } from "./local-nats.ts";
import { checkTrainable, resolveModelSpec, type ModelSpec } from "./model-spec.ts";
import { nodeAgent } from "./node-agent.ts";
import type { ProgressStream } from "./progress.ts";
import { CoordinatorProtocol, JobProtocol, NodeProtocol, RankProtocol, type RunSummary } from "./protocols.ts";

// How long a failed attempt waits for a node agent's report of a dead rank before it reports its
// own reason (the report comes over NATS within milliseconds of the exit).
const DEATH_REPORT_GRACE_MS = 2000;

export interface LaunchOptions {
  nnodes: number;
  /** This launcher's node (0 hosts the coordinator and the data). */
  nodeRank: number;
  nprocPerNode: number;
  /** NATS server URL(s), comma-separated; default the config's nats.url, else (one node only) a local nats-server. */
  natsUrl?: string;
  stderr?: ProgressStream;
  /** How long node 0 waits for the other nodes' launchers, and they for node 0 (default 300 s). */
  joinTimeoutMs?: number;
}

export interface LaunchedJob {
  /** Node 0: the run's summary (failed after too many failures). Other nodes: done or failed as node 0 said. */
  readonly done: Promise<RunSummary>;
  /** Node 0: finish the step in progress, checkpoint, end. Elsewhere: nothing. */
  stop(reason?: string): Promise<void>;
}

/** Starts this node's launcher; resolves once the job is under way on this node. */
export async function launch(cfg: JobConfig, o: LaunchOptions): Promise<LaunchedJob> {
  if (!(o.nodeRank >= 0 && o.nodeRank < o.nnodes)) throw new Error(`--node-rank ${o.nodeRank} is outside 0..${o.nnodes - 1}`);
  const stderr = o.stderr ?? process.stderr;
  const note = (line: string) => void stderr.write(line + "\n");
  // Checked before anything starts: a mesh that does not fit the world is a config mistake.
  checkTrainable(cfg, o.nnodes * o.nprocPerNode);
  const spec = resolveModelSpec(cfg);
  const mesh = new DeviceMesh(cfg.mesh, o.nnodes * o.nprocPerNode, headsOfHF(spec.kind === "config" ? spec.hf : await modelConfigJson(spec)));
  const servers = o.natsUrl ?? cfg.nats.url;
  if (servers === undefined && o.nnodes > 1) throw new Error("a job over several nodes needs a NATS server every node reaches: --nats URL or nats.url");
  let local: LocalNats | undefined;
  if (servers === undefined) {
    local = await startLocalNats();
    note(`nats: started a local nats-server at ${local.url}`);
  }
  const url = servers ?? local!.url;
  let transport: NatsTransport;
  try {
    transport = await NatsTransport.connect({
      servers: url.split(","),
      job: cfg.job,
      name: `launcher-${o.nodeRank}`,
    });
  } catch (err) {
    await local?.stop();
    throw err;
  }
  const system = new ActorSystem({ transport, name: `launcher-${o.nodeRank}`, dedupeCapacity: 64 });
  const close = async () => {
    await system.shutdown();
    await transport.close();
    await local?.stop();
  };
  try {
    return o.nodeRank === 0 ? await leadNode(cfg, o, { system, url, note, stderr, close, spec, mesh }) : await workerNode(cfg, o, system, url, note, close);
  } catch (err) {
    await close();
    throw err;
  }
}

type Note = (line: string) => void;

/** How long other nodes wait for an unanswering node 0 before they end their ranks and exit 1. */
const NODE0_SILENCE_MS = 60_000;

async function workerNode(cfg: JobConfig, o: LaunchOptions, system: ActorSystem, url: string, note: Note, close: () => Promise<void>): Promise<LaunchedJob> {
  let exited!: (r: { code: number; reason: string }) => void;
  const exit = new Promise<{ code: number; reason: string }>((r) => (exited = r));
  await system.spawn(
    ADDRESS.node(o.nodeRank),
    nodeAgent({
      node: o.nodeRank,
      nprocPerNode: o.nprocPerNode,
      natsUrl: url,
      natsJob: cfg.job,
      heartbeatMs: cfg.trainer.heartbeat_ms,
      deadAfterMs: cfg.trainer.dead_after_ms,
      onExit: (code, reason) => exited({ code, reason }),
      log: note,
    }),
  );
  // Node 0 may start after this one: retry until it serves the job actor.
  const job = system.ref(ADDRESS.job, JobProtocol);
  const until = Date.now() + (o.joinTimeoutMs ?? 300_000);
  for (;;) {
    try {
      await job.ask({ type: "join", node: o.nodeRank, nproc: o.nprocPerNode }, { timeoutMs: 5000 });
      break;
    } catch (err) {
      if (!(err instanceof NoResponderError || err instanceof AskTimeoutError) || Date.now() > until) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  note(`node ${o.nodeRank}: joined the job; running ranks ${o.nodeRank * o.nprocPerNode}..${(o.nodeRank + 1) * o.nprocPerNode - 1} when node 0 says`);
  // Node 0 ends the job with an exit message; a node 0 killed outright sends none.
  let lastAnswer = Date.now();
  const watch = setInterval(() => {
    job.ask({ type: "ping" }, { timeoutMs: 5000 }).then(
      () => (lastAnswer = Date.now()),
      () => {
        if (Date.now() - lastAnswer > NODE0_SILENCE_MS) exited({ code: 1, reason: `node 0's launcher has not answered for ${NODE0_SILENCE_MS / 1000} s` });
      },
    );
  }, 5000);
  const done = exit.then(async ({ code, reason }) => {
    clearInterval(watch);
    await close();
    return { state: code === 0 ? "done" : "failed", step: 0, tokens: 0, reason, last_loss: null } satisfies RunSummary;
  });
  return { done, stop: async () => {} };
}

interface Lead {
  system: ActorSystem;
  url: string;
  note: Note;
  stderr: ProgressStream;
  close: () => Promise<void>;
  spec: ModelSpec;
  mesh: DeviceMesh;
}

async function leadNode(cfg: JobConfig, o: LaunchOptions, { system, url, note, stderr, close, spec, mesh }: Lead): Promise<LaunchedJob> {
  const world = mesh.worldSize;
  const layouts = mesh.layouts();
  mkdirSync(cfg.output_dir, { recursive: true });
  const modelConfig = await modelConfigJson(spec);
  const t = cfg.trainer;
  const askMs = t.step_deadline_s * 1000;
  const config = JSON.parse(JSON.stringify(cfg)) as Record<string, unknown>;

  let generation = 0;
  let abortAttempt: AbortController | undefined;
  const joined = new Set<number>();
  let allJoined!: () => void;
  const joinedAll = new Promise<void>((r) => (allJoined = r));
  if (o.nnodes === 1) allJoined();

  // A second job of this name on a shared NATS server would receive this one's messages.
  const taken = await system.ref(ADDRESS.job, JobProtocol).ask({ type: "ping" }, { timeoutMs: 2000 }).then(
    () => true,
    () => false,
  );
  if (taken) throw new Error(`job "${cfg.job}" is already running on ${url}: stop it, or give this run another job name (--set job=...)`);

  await system.spawn(
    ADDRESS.job,
    defineActor(JobProtocol, () => ({
      assign: ({ rank, generation: g }) => {
        if (g !== generation) throw new Error(`rank ${rank} of generation ${g} asks to start, but the job is at generation ${generation}`);
        const layout = layouts[rank];
        if (!layout) throw new Error(`rank ${rank} is outside the world of ${world}`);
        return { generation, config, model: spec as unknown as Record<string, unknown>, layout: layout as unknown as Record<string, unknown> };
      },
      join: ({ node, nproc }) => {
        if (node >= o.nnodes) throw new Error(`node ${node} joined a job of ${o.nnodes} nodes`);
        if (nproc !== o.nprocPerNode) throw new Error(`node ${node} runs ${nproc} ranks, node 0 expects ${o.nprocPerNode} per node`);
        joined.add(node);
        if (joined.size === o.nnodes - 1) allJoined();
        return { nnodes: o.nnodes };
      },
      ping: () => ({}),
      // The reason names the rank; an older generation's report comes too late to matter.
      rankDied: ({ generation: g, reason }) => {
        if (g === generation) abortAttempt?.abort(reason);
        return {};
      },
    })),
  );
  await system.spawn(
    ADDRESS.node(0),
    nodeAgent({
      node: 0,
      nprocPerNode: o.nprocPerNode,
      natsUrl: url,
      natsJob: cfg.job,
      heartbeatMs: t.heartbeat_ms,
      deadAfterMs: t.dead_after_ms,
      log: note,
    }),
  );
  const nodes = Array.from({ length: o.nnodes }, (_, n) => system.ref(ADDRESS.node(n), NodeProtocol));
  const ranksOf = (n: number) => layouts.slice(n * o.nprocPerNode, (n + 1) * o.nprocPerNode).map((l: RankLayout) => l.rank);
  let stopReason: string | undefined;
  // A restart resumes from this run's last checkpoint, whatever checkpoint.resume named for the start.
  let lastCheckpoint: string | undefined;

  /** One generation of ranks from the last checkpoint; resolves with how it ended. */
  const attempt = async (): Promise<RunSummary> => {
    generation++;
    const ac = new AbortController();
    abortAttempt = ac;
    const aborted = new Promise<never>((_, reject) => ac.signal.addEventListener("abort", () => reject(new Error(String(ac.signal.reason))), { once: true }));
    aborted.catch(() => {});
    const guard = <T>(p: Promise<T>) => Promise.race([p, aborted]);
    try {
      const resumed = await findResume(lastCheckpoint ? { ...cfg, checkpoint: { ...cfg.checkpoint, resume: lastCheckpoint } } : cfg, note);
      await system.spawn(ADDRESS.data, dataActor(dataOptions(cfg, mesh, resumed, note)));
      await guard(Promise.all(nodes.map((n, i) => n.ask({ type: "start", generation, ranks: ranksOf(i) }, { timeoutMs: 180_000 }))));
      const ranks = layouts.map((l) => ADDRESS.rank(l.rank));
      if (resumed) {
        await guard(Promise.all(ranks.map((a) => system.ref(a, RankProtocol).ask({ type: "load", step: resumed.step, dir: resumed.dir, verified: resumed.verified }, { timeoutMs: askMs }))));
        note(`resumed from ${resumed.dir} at step ${resumed.step}`);
      }
      let finish!: (s: RunSummary) => void;
      const finished = new Promise<RunSummary>((r) => (finish = r));
      const coordinator = await system.spawn(
        ADDRESS.coordinator,
        coordinatorActor({
          ...coordinatorOptions(cfg, { ranks, mesh, modelConfig, stderr, resumed, onFinish: finish }),
          onCheckpoint: (dir) => (lastCheckpoint = dir),
          abort: ac.signal,
        }),
      );
      await coordinator.ask({ type: "start" });
      if (stopReason !== undefined) await coordinator.ask({ type: "stop", reason: stopReason });
      const s = await finished;
      if (s.state !== "failed") return s;
      // A rank that exits fails the coordinator's next ask ("no one serves rank.N") as soon as its
      // subscription is gone, which can be before its node agent's report arrives: give the report
      // a moment, so the failure names the rank and how it ended.
      // The wait ends at the abort, and leaves no timer behind either way.
      if (!ac.signal.aborted) await sleep(DEATH_REPORT_GRACE_MS, undefined, { signal: ac.signal }).catch(() => {});
      return ac.signal.aborted ? { ...s, reason: String(ac.signal.reason) } : s;
    } catch (err) {
      return { state: "failed", step: 0, tokens: 0, reason: err instanceof Error ? err.message : String(err), last_loss: null };
    } finally {
      abortAttempt = undefined;
      await system.stop(ADDRESS.coordinator);
      await system.stop(ADDRESS.data);
      await Promise.all(nodes.map((n) => n.ask({ type: "stop" }, { timeoutMs: 60_000 }).catch((err: unknown) => note(`stopping ranks: ${(err as Error).message}`))));
    }
  };

  const run = async (): Promise<RunSummary> => {
    await withTimeout(joinedAll, o.joinTimeoutMs ?? 300_000, () => `only ${joined.size} of the ${o.nnodes - 1} other nodes joined`);
    note(`${world} ranks on ${o.nnodes} node${o.nnodes === 1 ? "" : "s"}: mesh dp=${mesh.shape.dp} fsdp=${mesh.shape.fsdp} sp=${mesh.shape.sp}`);
    for (let failures = 0; ; failures++) {
      const s = await attempt();
      if (s.state !== "failed" || stopReason !== undefined) return s;
      if (failures >= t.max_failures) {
        return { ...s, reason: `${s.reason} (${failures} restart${failures === 1 ? "" : "s"} used of trainer.max_failures=${t.max_failures}; giving up)` };
      }
      note(`failure: ${s.reason}; restarting every rank from the last checkpoint (restart ${failures + 1} of ${t.max_failures})`);
    }
  };

  const done = run()
    .catch((err: unknown): RunSummary => ({ state: "failed", step: 0, tokens: 0, reason: err instanceof Error ? err.message : String(err), last_loss: null }))
    .then(async (s) => {
      const code = s.state === "failed" ? 1 : 0;
      await Promise.all(nodes.slice(1).map((n) => n.ask({ type: "exit", code, reason: s.reason }, { timeoutMs: 10_000 }).catch(() => {})));
      await close();
      return s;
    });
  return {
    done,
    stop: async (reason = "stop requested") => {
      stopReason ??= reason;
      await system
        .ref(ADDRESS.coordinator, CoordinatorProtocol)
        .ask({ type: "stop", reason }, { timeoutMs: 10_000 })
        .catch(() => {});
    },
  };
}

function headsOfHF(hf: Record<string, unknown>): { numHeads?: number; numKvHeads?: number } {
  const n = hf.num_attention_heads ?? hf.n_head;
  const kv = hf.num_key_value_heads ?? n;
  return typeof n === "number" ? { numHeads: n, ...(typeof kv === "number" ? { numKvHeads: kv } : {}) } : {};
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what()} within ${ms / 1000} s`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
