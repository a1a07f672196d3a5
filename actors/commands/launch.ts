// `tessera launch`: one launcher per node of a multi-node job (torchrun's shape).
import type { Command } from "../../runtime/index.ts";
import { UsageError } from "../../runtime/index.ts";
import { launch } from "../launcher.ts";
import { loadJobConfig, runJob } from "./run-job.ts";
import { positiveInt } from "./train.ts";

export const launchCommand: Command = {
  path: ["launch"],
  summary: "run this node's part of a multi-node job (one launcher per node)",
  description: [
    "Every node runs `tessera launch --nnodes N --node-rank R --nproc-per-node P --nats URL CONFIG`",
    "with the same CONFIG and URL. Node R runs ranks R*P .. R*P+P-1 as child processes. Node 0",
    "also hosts the coordinator and the data pipeline: its output_dir and checkpoint.dir must be",
    "on storage every node sees (ranks write their checkpoint shards there). The nodes may start",
    "in any order; each waits up to 300 s for the others. Node 0's exit code is the job's; the",
    "other launchers exit with it when node 0 ends the job. A rank that dies or hangs restarts",
    "every rank on every node from the last checkpoint, up to trainer.max_failures times.",
  ].join("\n"),
  args: [{ name: "CONFIG", help: "the job config (YAML)" }],
  options: [
    { name: "nnodes", kind: "value", valueName: "N", help: "nodes of the job (default 1)" },
    { name: "node-rank", kind: "value", valueName: "R", help: "this node, 0..N-1 (default 0)" },
    { name: "nproc-per-node", kind: "value", valueName: "P", help: "ranks on each node (default: world size / N)" },
    { name: "nats", kind: "value", valueName: "URL", help: "NATS server URL(s), comma-separated (default nats.url; one node: a local nats-server)" },
    { name: "output", short: "o", kind: "value", valueName: "DIR", help: "output folder (overrides output_dir)" },
    { name: "set", kind: "list", valueName: "KEY=VALUE", help: "override a config value, VALUE read as YAML (repeatable)" },
  ],
  async run(input, io) {
    const cfg = loadJobConfig(input, io);
    if (!cfg) return 1;
    const nnodes = positiveInt("--nnodes", input.value("nnodes") ?? "1");
    const nodeRank = Number(input.value("node-rank") ?? "0");
    if (!Number.isInteger(nodeRank) || nodeRank < 0 || nodeRank >= nnodes) throw new UsageError(`--node-rank must be in 0..${nnodes - 1}`);
    const p = input.value("nproc-per-node");
    let nproc: number;
    if (p !== undefined) nproc = positiveInt("--nproc-per-node", p);
    else {
      const dims = [cfg.mesh.dp, cfg.mesh.fsdp, cfg.mesh.sp];
      const world = dims.reduce((a, b) => a * b, 1);
      if (dims.includes(-1) || world % nnodes !== 0) throw new UsageError("give --nproc-per-node (the mesh does not fix the ranks per node)");
      nproc = world / nnodes;
    }
    const nats = input.value("nats");
    if (nodeRank === 0) io.err(`training ${cfg.job}: ${nnodes} node(s) x ${nproc} ranks; output in ${cfg.output_dir}\n`);
    return runJob(
      `tessera launch (node ${nodeRank})`,
      cfg,
      io,
      (stderr) => launch(cfg, { nnodes, nodeRank, nprocPerNode: nproc, stderr, ...(nats !== undefined ? { natsUrl: nats } : {}) }),
      { quiet: nodeRank !== 0 },
    );
  },
};
