// Argument parsing against a command's spec: GNU-style long options (--name value,
// --name=value), short aliases, `--` to end options, and strict checking (an unknown option
// or a missing value is a UsageError, never ignored).
import { UsageError, type Command, type OptionSpec, type ParsedArgs } from "./command.ts";

export const helpOption: OptionSpec = { name: "help", short: "h", kind: "flag", help: "show this help" };

export function parseArgs(cmd: Pick<Command, "args" | "options">, argv: readonly string[]): ParsedArgs {
  const specs = [...cmd.options, helpOption];
  const flags = new Set<string>();
  const values = new Map<string, string[]>();
  const positionals: string[] = [];

  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith("-") || a === "-") {
      positionals.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const long = a.startsWith("--");
    const key = long ? a.slice(2, eq < 0 ? undefined : eq) : a.slice(1);
    const spec = specs.find((s) => (long ? s.name === key : s.short === key));
    if (!spec || (!long && eq >= 0)) throw new UsageError(`unknown option ${long ? `--${key}` : a}`);
    if (spec.kind === "flag") {
      if (eq >= 0) throw new UsageError(`option --${spec.name} takes no value`);
      flags.add(spec.name);
      continue;
    }
    let v: string | undefined;
    if (long && eq >= 0) v = a.slice(eq + 1);
    else if (i + 1 < argv.length) v = argv[++i];
    if (v === undefined) throw new UsageError(`option --${spec.name} needs a value (${spec.valueName ?? "VALUE"})`);
    values.set(spec.name, [...(spec.kind === "list" ? (values.get(spec.name) ?? []) : []), v]);
  }

  const args: Record<string, string | undefined> = {};
  if (!flags.has("help")) {
    const required = cmd.args.filter((s) => !s.optional).length;
    if (positionals.length < required) {
      throw new UsageError(`missing ${cmd.args.slice(positionals.length).filter((s) => !s.optional).map((s) => s.name).join(" ")}`);
    }
    if (positionals.length > cmd.args.length) {
      throw new UsageError(`unexpected argument ${JSON.stringify(positionals[cmd.args.length])}`);
    }
    cmd.args.forEach((s, i) => (args[s.name] = positionals[i]));
  }

  return {
    args,
    flag: (name) => flags.has(name),
    value: (name) => values.get(name)?.at(-1),
    list: (name) => values.get(name) ?? [],
  };
}
