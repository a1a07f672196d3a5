// Help text: the top-level command list, a group's list, and one command's usage.
import { helpOption } from "./args.ts";
import type { Command, OptionSpec } from "./command.ts";

export function usageLine(cmd: Command): string {
  const args = cmd.args.map((a) => (a.optional ? `[${a.name}]` : a.name));
  return ["Usage: tessera", ...cmd.path, ...args, cmd.options.length ? "[options]" : ""].filter(Boolean).join(" ");
}

export function commandHelp(cmd: Command): string {
  const lines = [usageLine(cmd), "", cmd.summary[0]!.toUpperCase() + cmd.summary.slice(1) + "."];
  if (cmd.description) lines.push("", cmd.description);
  if (cmd.args.length) {
    lines.push("", "Arguments:", ...table(cmd.args.map((a) => [a.name, a.help + (a.optional ? " (optional)" : "")])));
  }
  lines.push("", "Options:", ...table([...cmd.options, helpOption].map((o) => [optionLabel(o), o.help])));
  return lines.join("\n") + "\n";
}

/** Lists `commands` (all of them, or a group's). */
export function listHelp(commands: readonly Command[], prefix: readonly string[]): string {
  const head = prefix.length ? `Usage: tessera ${prefix.join(" ")} <command> [options]` : "Usage: tessera <command> [options]";
  const lines = [head];
  if (prefix.length === 0) lines.push("", "Train large language models from TypeScript.");
  lines.push("", "Commands:", ...table(commands.map((c) => [c.path.join(" "), c.summary])));
  lines.push("", "Options:", ...table([["-h, --help", "show this help"], ...(prefix.length ? [] : [["--version", "print the version"]])]));
  lines.push("", `Run \`tessera ${prefix.length ? prefix.join(" ") + " " : ""}<command> --help\` for a command's arguments and options.`);
  return lines.join("\n") + "\n";
}

function optionLabel(o: OptionSpec): string {
  const long = `--${o.name}${o.kind === "flag" ? "" : ` ${o.valueName ?? "VALUE"}`}`;
  return o.short ? `-${o.short}, ${long}` : `    ${long}`;
}

function table(rows: readonly (readonly string[])[]): string[] {
  const width = Math.max(...rows.map(([a = ""]) => a.length));
  return rows.map(([a = "", b = ""]) => `  ${a.padEnd(width)}  ${b}`);
}
