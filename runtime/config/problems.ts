// Config problems: each names where it came from (file:line:col, or the --set override) and
// the key path, so a user can go straight to the line. Validation collects all of them.

export type KeyPath = readonly (string | number)[];

export interface ConfigProblem {
  /** `file:line:col`, `file` (position unknown), `--set key=value`, or "" (a resolved config). */
  where: string;
  /** Dotted key path (`optimizer.lr`, `data.sources.0.path`); empty for the whole file. */
  path: string;
  message: string;
  /** For sorting: problems of one file in line order. */
  line?: number;
  col?: number;
}

export function formatProblem(p: ConfigProblem): string {
  return [p.where, p.path, p.message].filter((s) => s !== "").join(": ");
}

export function dotted(path: KeyPath): string {
  return path.join(".");
}

/** A config that does not validate; `problems` holds every one found, in file order. */
export class ConfigError extends Error {
  readonly problems: readonly ConfigProblem[];

  constructor(problems: ConfigProblem[]) {
    const sorted = [...problems].sort(
      (a, b) =>
        fileOf(a.where).localeCompare(fileOf(b.where)) || (a.line ?? 0) - (b.line ?? 0) || (a.col ?? 0) - (b.col ?? 0),
    );
    super(sorted.map(formatProblem).join("\n"));
    this.name = "ConfigError";
    this.problems = sorted;
  }
}

function fileOf(where: string): string {
  // Overrides sort after file problems: they are applied after the file.
  return where.startsWith("--set") ? "\uffff" : where.replace(/:\d+:\d+$/, "");
}
