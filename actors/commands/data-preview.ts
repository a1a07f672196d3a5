// `tessera data preview CONFIG`: the first packed batches of a job's data, as a user checks them.
import { loadConfig, ConfigError, type Command } from "../../runtime/index.ts";
import { ANSI, BRACKETS, previewBatches, previewJson, type Preview } from "../../data/index.ts";
import { pipelineOptions } from "../data-actor.ts";

export const dataPreview: Command = {
  path: ["data", "preview"],
  summary: "show the first packed batches of a job's data and the reading stats",
  description: [
    "Reads the config's data sources once through (no repeat), tokenizes, packs, and prints",
    "each batch's sequences decoded, with the tokens that carry a loss marked ([[...]], or green",
    "on a terminal), then the stats: records read, bad records with file and line, tokens,",
    "truncated and dropped records, and how full the packing budget is. --json prints the stats",
    "and batches as one JSON object (records, bad_records [{file, line, reason}], tokens, fill, ...).",
  ].join("\n"),
  args: [{ name: "CONFIG", help: "the job config (YAML)" }],
  options: [
    { name: "batches", kind: "value", valueName: "N", help: "how many packed batches to show (default 2)" },
    { name: "set", kind: "list", valueName: "KEY=VALUE", help: "override a config value (repeatable)" },
    { name: "json", kind: "flag", help: "print one JSON object" },
  ],
  async run(input, io) {
    const n = Number(input.value("batches") ?? "2");
    if (!Number.isInteger(n) || n < 0) throw new Error(`--batches: expected a non-negative integer, got ${input.value("batches")}`);
    const file = input.args.CONFIG!;
    let cfg;
    try {
      cfg = loadConfig(file, { overrides: input.list("set") });
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      io.err(`${err.message}\n`);
      return 1;
    }
    const tty = !input.flag("json") && process.stdout.isTTY === true;
    const preview = await previewBatches(pipelineOptions(cfg.data, { repeat: false, groups: 1 }), n, tty ? ANSI : BRACKETS);
    io.out(input.flag("json") ? JSON.stringify(previewJson(preview)) + "\n" : render(preview));
    return 0;
  },
};

function render(p: Preview): string {
  const lines: string[] = [];
  p.batches.forEach((b, i) => {
    lines.push(`── batch ${i}: ${b.tokens} tokens, ${b.sequences.length} sequences, fill ${(b.fill * 100).toFixed(1)}%`);
    b.sequences.forEach((s, j) => lines.push(`  [${j}] ${s.tokens} tokens, ${s.loss_tokens} with loss:`, indent(s.text, "      ")));
  });
  const s = p.stats;
  lines.push(
    "── stats",
    `  records ${s.records}, bad ${s.bad}, truncated ${s.truncated}, dropped ${s.dropped}`,
    `  tokens ${s.tokens} (${s.loss_tokens} with loss) in ${s.batches} batches, fill ${(s.fill * 100).toFixed(1)}%`,
  );
  for (const r of s.bad_records) lines.push(`  bad: ${r.file}:${r.row ?? r.line}: ${r.reason}`);
  if (s.bad > s.bad_records.length) lines.push(`  ... and ${s.bad - s.bad_records.length} more bad records`);
  return lines.join("\n") + "\n";
}

function indent(text: string, pad: string): string {
  return text.split("\n").map((l) => pad + l).join("\n");
}
