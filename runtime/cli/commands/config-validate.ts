// `tessera config validate FILE`: load a job config as a run would, report every problem.
import { ConfigError, loadConfig, type JobConfig } from "../../config/index.ts";
import type { Command } from "../command.ts";

export const configValidate: Command = {
  path: ["config", "validate"],
  summary: "check a job config and print it resolved",
  description: [
    "Loads FILE as a training run would: YAML, --set overrides, dataset files, defaults,",
    "cross-field checks, and that input files exist. Prints OK and a summary (or the resolved",
    "config as JSON) and exits 0; or prints every problem as FILE:LINE:COL: KEY: MESSAGE and exits 1.",
  ].join("\n"),
  args: [{ name: "FILE", help: "the job config (YAML)" }],
  options: [
    { name: "set", kind: "list", valueName: "KEY=VALUE", help: "override a value, VALUE read as YAML (repeatable): --set mesh.fsdp=2" },
    { name: "json", kind: "flag", help: "print the resolved config as JSON" },
    { name: "no-check-paths", kind: "flag", help: "do not check that input files and folders exist" },
  ],
  async run(input, io) {
    const file = input.args.FILE!;
    let cfg: JobConfig;
    try {
      cfg = loadConfig(file, { overrides: input.list("set"), checkPaths: !input.flag("no-check-paths") });
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      const n = err.problems.length;
      io.err(`${err.message}\n${file}: ${n} problem${n === 1 ? "" : "s"}\n`);
      return 1;
    }
    io.out(input.flag("json") ? JSON.stringify(cfg, null, 2) + "\n" : summary(file, cfg));
    return 0;
  },
};

function summary(file: string, c: JobConfig): string {
  const m = c.model.config;
  const model = m
    ? `${m.model_type} from inline config (hidden ${m.hidden_size ?? "?"}, ${m.num_hidden_layers ?? "?"} layers)`
    : c.model.path;
  const count = (n: number, what: string) => `${n} ${what}${n === 1 ? "" : "s"}`;
  const s = c.optimizer.schedule;
  const lines = [
    `OK ${file}`,
    `  job        ${c.job}, output in ${c.output_dir}`,
    `  model      ${model}; dtype ${c.model.dtype}, on ${c.device}`,
    `  data       ${count(c.data.sources.length, "source")}${c.data.eval ? `, eval ${count(c.data.eval.sources.length, "source")}` : ""}; packed to ${c.data.packing_length} tokens (${c.data.packing_strategy})`,
    `  mesh       dp=${c.mesh.dp} fsdp=${c.mesh.fsdp} sp=${c.mesh.sp}`,
    `  optimizer  ${c.optimizer.name}, lr ${c.optimizer.lr}, ${s.name} schedule, ${s.warmup_steps} warmup steps`,
    `  trainer    ${c.trainer.max_steps} steps, grad_accum ${c.trainer.grad_accum}, ${c.trainer.micro_batch_tokens} tokens per micro batch`,
    `  telemetry  spans: ${c.telemetry.exporter}`,
  ];
  return lines.join("\n") + "\n";
}
