// `tessera train CONFIG`: one machine. One rank runs in this process over the in-process
// transport (the embedded default of the design); several run as child processes over NATS
// (launcher.ts), with the coordinator and the data in this process.
import type { Command } from "../../runtime/index.ts";
import { UsageError } from "../../runtime/index.ts";
import { startTraining } from "../job.ts";
import { launch } from "../launcher.ts";
import { loadJobConfig, runJob } from "./run-job.ts";

export const train: Command = {
  path: ["train"],
  summary: "train a model on one machine (one rank in this process, or several rank processes)",
  description: [
    "Loads CONFIG as `tessera config validate` does, builds the model, and runs the trainer",
    "until trainer.max_steps (or trainer.max_tokens). Writes OUTPUT_DIR/metrics.jsonl (one",
    "record per step, one per evaluation) and shows a progress line on stderr. Checkpoints go to",
    "checkpoint.dir every checkpoint.every steps and at the end; with checkpoint.resume: auto (the",
    "default) a run continues from the newest one there. Ctrl-C finishes the step in progress,",
    "writes the final checkpoint and exits 0; a second Ctrl-C aborts.",
    "",
    "The world size is the product of mesh.dp, mesh.fsdp and mesh.sp (--nproc when one is -1).",
    "One rank runs in this process. Several run as child processes (TESSERA_CPU_THREADS = cores /",
    "ranks each) over the NATS server of nats.url, or over a nats-server started on loopback;",
    "a rank that dies or hangs restarts every rank from the last checkpoint, up to",
    "trainer.max_failures times.",
  ].join("\n"),
  args: [{ name: "CONFIG", help: "the job config (YAML)" }],
  options: [
    { name: "output", short: "o", kind: "value", valueName: "DIR", help: "output folder (overrides output_dir)" },
    { name: "set", kind: "list", valueName: "KEY=VALUE", help: "override a value, VALUE read as YAML (repeatable): --set trainer.max_steps=10" },
    { name: "nproc", kind: "value", valueName: "N", help: "ranks to run (default: the product of the mesh dims)" },
  ],
  async run(input, io) {
    const cfg = loadJobConfig(input, io);
    if (!cfg) return 1;
    const world = worldSize(cfg.mesh, input.value("nproc"));
    io.err(`training ${cfg.job}: output in ${cfg.output_dir}\n`);
    return runJob("tessera train", cfg, io, (stderr) =>
      world === 1 ? startTraining(cfg, { stderr }) : launch(cfg, { nnodes: 1, nodeRank: 0, nprocPerNode: world, stderr }),
    );
  },
};

/** --nproc, else the product of the mesh dims (which then may not infer one). */
export function worldSize(mesh: { dp: number; fsdp: number; sp: number }, nproc: string | undefined): number {
  if (nproc !== undefined) return positiveInt("--nproc", nproc);
  const dims = [mesh.dp, mesh.fsdp, mesh.sp];
  if (dims.includes(-1)) throw new UsageError("a mesh dim is -1 (inferred): give the world size with --nproc N");
  return dims.reduce((a, b) => a * b, 1);
}

export function positiveInt(what: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${what} must be a positive integer, got "${v}"`);
  return n;
}
