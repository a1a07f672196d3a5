// The main of one rank process (spawned by a node agent, node-agent.ts): connects to the
// job's NATS, asks the job actor what to run (the resolved config, the model, its mesh
// layout), serves its collectives endpoint (`rank.<r>.coll`) and its RankActor
// (`rank.<r>`), then beats to its node agent until stopped. SIGTERM aborts the collectives
// (a peer blocked in one fails at once rather than at its deadline) and exits; so does the
// death of the launcher that spawned it.
import { HostCollectives, type RankLayout } from "../mesh/index.ts";
import { ActorSystem, NatsTransport, parseConfig, setupTelemetry, startChildHeartbeats } from "../runtime/index.ts";
import { ADDRESS } from "./job.ts";
import type { ModelSpec } from "./model-spec.ts";
import { RANK_ENV } from "./node-agent.ts";
import { JobProtocol } from "./protocols.ts";
import { rankActor } from "./rank-actor.ts";

function need(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`rank process: ${name} is not set (a node agent sets it)`);
  return v;
}

async function main(): Promise<void> {
  const rank = Number(need(RANK_ENV.rank));
  const generation = Number(need(RANK_ENV.generation));
  const transport = await NatsTransport.connect({ servers: need(RANK_ENV.natsUrl).split(","), job: need(RANK_ENV.natsJob), name: `rank-${rank}` });
  const system = new ActorSystem({ transport, name: `rank-${rank}`, dedupeCapacity: 64 });
  let comm: HostCollectives | undefined;
  let telemetry: { shutdown(): Promise<void> } | undefined;
  let exiting = false;
  const exit = async (code: number) => {
    if (exiting) return;
    exiting = true;
    comm?.abort("rank process stopping");
    await system.shutdown().catch(() => {});
    await comm?.close().catch(() => {});
    await transport.close().catch(() => {});
    await telemetry?.shutdown().catch(() => {});
    process.exit(code);
  };
  process.once("SIGTERM", () => void exit(0));
  // Ctrl-C in a terminal reaches the whole process group: the launcher decides (it finishes
  // the step and checkpoints), so a rank must not exit under it.
  process.on("SIGINT", () => {});
  // A launcher killed outright (SIGKILL) stops nobody: its orphaned ranks must not linger.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) void exit(1);
  }, 1000).unref();

  const job = system.ref(ADDRESS.job, JobProtocol);
  const a = await job.ask({ type: "assign", rank, generation }, { timeoutMs: 60_000 });
  // The config crossed the wire as plain data: validate it as any inbound message is.
  const config = parseConfig(a.config);
  const layout = a.layout as unknown as RankLayout;
  // Each rank its own traces file (writers never interleave); spans join the coordinator's
  // traces through the context that crosses NATS with every message. No Prometheus endpoint:
  // the coordinator's process records the training metrics, and ranks sharing a host would
  // contend for the configured port.
  telemetry = await setupTelemetry({ ...config.telemetry, prometheus_port: undefined }, {
    resourceAttributes: { "tessera.job": config.job, "tessera.rank": rank },
    jsonlPath: config.telemetry.jsonl_path.replace(/(\.jsonl)?$/, `.rank-${String(rank).padStart(5, "0")}.jsonl`),
  });
  comm = await HostCollectives.start({
    transport,
    rank,
    // Inside the step deadline, so that a stuck collective fails the step with its own
    // message (which ranks it waited for) before the coordinator's ask runs out.
    timeoutMs: config.trainer.step_deadline_s * 800,
    onError: (err) => process.stderr.write(`rank ${rank}: collectives: ${err.message}\n`),
  });
  await system.spawn(ADDRESS.rank(rank), rankActor({ config, model: a.model as unknown as ModelSpec, layout, data: ADDRESS.data, comm }));
  startChildHeartbeats(system);
}

main().catch((err: unknown) => {
  process.stderr.write(`rank process ${process.env[RANK_ENV.rank] ?? "?"}: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
