// What a CLI command is. Each command lives in its own file under commands/ and is listed
// once in commands.ts; the dispatcher, --help and argument checking come from here.

export interface OptionSpec {
  /** Long name without dashes: `set` for --set. */
  name: string;
  short?: string;
  /** flag: no value; value: one value (last wins); list: repeatable, values kept in order. */
  kind: "flag" | "value" | "list";
  /** Shown in help for value and list options: `--set KEY=VALUE`. */
  valueName?: string;
  help: string;
}

export interface ArgSpec {
  /** Shown in usage, upper case by convention: FILE. */
  name: string;
  help: string;
  optional?: boolean;
}

export interface Io {
  out(text: string): void;
  err(text: string): void;
}

export interface ParsedArgs {
  /** Positional arguments by their spec name. */
  args: Record<string, string | undefined>;
  flag(name: string): boolean;
  value(name: string): string | undefined;
  list(name: string): string[];
}

export interface Command {
  /** Words that name it: ["config", "validate"] is `tessera config validate`. */
  path: readonly string[];
  summary: string;
  /** Paragraphs shown by --help under the usage line. */
  description?: string;
  args: readonly ArgSpec[];
  options: readonly OptionSpec[];
  /** Returns the exit code: 0 success, 1 failure (2 is kept for usage errors). */
  run(input: ParsedArgs, io: Io): Promise<number>;
}

/** A mistake in how the command was called: exit code 2 and a pointer to --help. */
export class UsageError extends Error {
  override name = "UsageError";
}
