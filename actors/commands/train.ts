// `tessera train CONFIG`: one rank in this process (the embedded default of the design).
import { join } from "node:path";
import type { Command } from "../../runtime/index.ts";
import { ConfigError, loadConfig, setupTelemetry, type JobConfig } from "../../runtime/index.ts";
import { startTraining } from "../job.ts";

export const train: Command = {
  path: ["train"],
  summary: "train a model on one machine (one rank, in this process)",
  description: [
    "Loads CONFIG as `tessera config validate` does, builds the model, and runs the trainer",
    "until trainer.max_steps (or trainer.max_tokens). Writes OUTPUT_DIR/metrics.jsonl (one",
    "record per step, one per evaluation) and shows a progress line on stderr. Checkpoints go to",
    "checkpoint.dir every checkpoint.every steps and at the end; with checkpoint.resume: auto (the",
    "default) a run continues from the newest one there. Ctrl-C finishes the step in progress,",
    "writes the final checkpoint and exits 0; a second Ctrl-C aborts.",
  ].join("\n"),
  args: [{ name: "CONFIG", help: "the job config (YAML)" }],
  options: [
    { name: "output", short: "o", kind: "value", valueName: "DIR", help: "output folder (overrides output_dir)" },
    { name: "set", kind: "list", valueName: "KEY=VALUE", help: "override a value, VALUE read as YAML (repeatable): --set trainer.max_steps=10" },
  ],
  async run(input, io) {
    const file = input.args.CONFIG!;
    const output = input.value("output");
    let cfg: JobConfig;
    try {
      cfg = loadConfig(file, { overrides: [...input.list("set"), ...(output !== undefined ? [`output_dir=${JSON.stringify(output)}`] : [])] });
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      const n = err.problems.length;
      io.err(`${err.message}\n${file}: ${n} problem${n === 1 ? "" : "s"}\n`);
      return 1;
    }

    const telemetry = await setupTelemetry(cfg.telemetry, { resourceAttributes: { "tessera.job": cfg.job } });
    // io.err is stderr when run as the bin; rewriting the line is only for a terminal.
    const stderr = { write: (t: string) => io.err(t), isTTY: process.stderr.isTTY === true };
    let interrupts = 0;
    let run: Awaited<ReturnType<typeof startTraining>> | undefined;
    const onSigint = () => {
      interrupts++;
      if (interrupts > 1) {
        io.err("\ninterrupted again: aborting without a checkpoint\n");
        process.exit(130);
      }
      io.err("\ninterrupted: finishing this step and writing a checkpoint (Ctrl-C again to abort)\n");
      void run?.stop("interrupted (SIGINT)");
    };
    process.on("SIGINT", onSigint);
    try {
      io.err(`training ${cfg.job}: output in ${cfg.output_dir}\n`);
      run = await startTraining(cfg, { stderr });
      if (interrupts > 0) await run.stop("interrupted (SIGINT)");
      const s = await run.done;
      const metrics = join(cfg.output_dir, "metrics.jsonl");
      if (s.state === "failed") {
        io.err(`tessera train: failed at step ${s.step + 1}: ${s.reason}\n`);
        return 1;
      }
      const loss = s.last_loss === null ? "" : `, last loss ${s.last_loss.toFixed(4)}`;
      io.err(`${s.state === "stopped" ? "stopped" : "done"}: ${s.reason}; ${s.step} steps, ${s.tokens.toLocaleString("en-US")} tokens${loss}; metrics in ${metrics}\n`);
      return 0;
    } catch (err) {
      io.err(`tessera train: ${err instanceof Error ? err.message : String(err)}\n`);
      return 1;
    } finally {
      process.off("SIGINT", onSigint);
      await telemetry.shutdown();
    }
  },
};
