// What `tessera train` and `tessera launch` share: loading the config, telemetry, Ctrl-C
// (finish the step, checkpoint, exit 0; a second one aborts), and the closing line.
import { join } from "node:path";
import type { Io, ParsedArgs } from "../../runtime/index.ts";
import { ConfigError, loadConfig, setupTelemetry, type JobConfig } from "../../runtime/index.ts";
import type { ProgressStream } from "../progress.ts";
import type { RunSummary } from "../protocols.ts";

export interface StartedJob {
  readonly done: Promise<RunSummary>;
  stop(reason?: string): Promise<void>;
}

/** The config CONFIG with --set and --output applied; undefined (after reporting) when it is invalid. */
export function loadJobConfig(input: ParsedArgs, io: Io): JobConfig | undefined {
  const file = input.args.CONFIG!;
  const output = input.value("output");
  try {
    return loadConfig(file, { overrides: [...input.list("set"), ...(output !== undefined ? [`output_dir=${JSON.stringify(output)}`] : [])] });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const n = err.problems.length;
    io.err(`${err.message}\n${file}: ${n} problem${n === 1 ? "" : "s"}\n`);
    return undefined;
  }
}

/** Runs a job to its end; returns the exit code. `quiet`: no closing summary (a node other than 0). */
export async function runJob(
  name: string,
  cfg: JobConfig,
  io: Io,
  start: (stderr: ProgressStream) => Promise<StartedJob>,
  o: { quiet?: boolean } = {},
): Promise<number> {
  const telemetry = await setupTelemetry(cfg.telemetry, { resourceAttributes: { "tessera.job": cfg.job } });
  // io.err is stderr when run as the bin; rewriting the line is only for a terminal.
  const stderr = { write: (t: string) => io.err(t), isTTY: process.stderr.isTTY === true };
  let interrupts = 0;
  let run: StartedJob | undefined;
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
    run = await start(stderr);
    if (interrupts > 0) await run.stop("interrupted (SIGINT)");
    const s = await run.done;
    if (s.state === "failed") {
      io.err(`${name}: failed${o.quiet ? "" : ` at step ${s.step + 1}`}: ${s.reason}\n`);
      return 1;
    }
    if (o.quiet) return 0;
    const metrics = join(cfg.output_dir, "metrics.jsonl");
    const loss = s.last_loss === null ? "" : `, last loss ${s.last_loss.toFixed(4)}`;
    io.err(`${s.state === "stopped" ? "stopped" : "done"}: ${s.reason}; ${s.step} steps, ${s.tokens.toLocaleString("en-US")} tokens${loss}; metrics in ${metrics}\n`);
    return 0;
  } catch (err) {
    io.err(`${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  } finally {
    process.off("SIGINT", onSigint);
    await telemetry.shutdown();
  }
}
