// The `tessera` CLI: finds the command named by the leading words of argv, parses the rest
// against its spec, runs it. Exit codes: 0 success, 1 the command failed, 2 usage error.
import { readFileSync } from "node:fs";
import { parseArgs } from "./args.ts";
import { UsageError, type Command, type Io } from "./command.ts";
import { commands } from "./commands.ts";
import { commandHelp, listHelp, usageLine } from "./help.ts";

const processIo: Io = {
  out: (t) => void process.stdout.write(t),
  err: (t) => void process.stderr.write(t),
};

export async function main(argv: readonly string[], io: Io = processIo, table: readonly Command[] = commands): Promise<number> {
  // The longest run of leading words that names a command or a group of commands.
  const words: string[] = [];
  for (const w of argv) {
    if (w.startsWith("-") || !table.some((c) => startsWith(c.path, [...words, w]))) break;
    words.push(w);
  }
  const cmd = table.find((c) => c.path.length === words.length && startsWith(c.path, words));
  const rest = argv.slice(words.length);

  if (!cmd) {
    const group = table.filter((c) => startsWith(c.path, words));
    const next = rest[0];
    if (next === "--help" || next === "-h") {
      io.out(listHelp(group, words));
      return 0;
    }
    if (words.length === 0 && next === "--version") {
      io.out(version() + "\n");
      return 0;
    }
    const where = ["tessera", ...words].join(" ");
    const problem =
      next === undefined
        ? `${where}: missing command`
        : next.startsWith("-")
          ? `${where}: unknown option ${next}`
          : `${where}: unknown command ${JSON.stringify(next)}`;
    io.err(`${problem}\n\n${listHelp(group, words)}`);
    return 2;
  }

  try {
    const parsed = parseArgs(cmd, rest);
    if (parsed.flag("help")) {
      io.out(commandHelp(cmd));
      return 0;
    }
    return await cmd.run(parsed, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`tessera ${cmd.path.join(" ")}: ${err.message}\n${usageLine(cmd)}\nRun \`tessera ${cmd.path.join(" ")} --help\` for more.\n`);
      return 2;
    }
    // A failure is reported by its message; the stack only helps us, so it waits for TESSERA_DEBUG.
    const detail = err instanceof Error ? (process.env.TESSERA_DEBUG ? (err.stack ?? err.message) : err.message) : String(err);
    io.err(`tessera ${cmd.path.join(" ")}: ${detail}\n`);
    return 1;
  }
}

function startsWith(path: readonly string[], prefix: readonly string[]): boolean {
  return prefix.length <= path.length && prefix.every((w, i) => path[i] === w);
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
  return `tessera ${pkg.version}`;
}
