// Loading a job config: YAML with source positions ► --set overrides ► dataset files
// expanded ► relative input paths resolved ► zod ► input paths checked on disk. Every
// problem found is reported at once, each naming its file:line:col (or its --set) and key.
//
// Relative input paths (model.path, data.tokenizer, sources' paths, data.dataset) are
// relative to the file that names them (a config file, or a dataset file), and to the
// working directory when they come from --set; the loaded config holds them absolute so
// that every process reads the same files. Output paths (output_dir, checkpoint.dir,
// telemetry.jsonl_path, checkpoint.resume) stay as written: relative to the working directory.
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { JobConfigSchema, type JobConfig } from "./schema.ts";
import { findings } from "./issues.ts";
import { applyOverride, parseOverride } from "./overrides.ts";
import { parseYaml, whereIn, type ParsedYaml } from "./positions.ts";
import { ConfigError, dotted, type ConfigProblem, type KeyPath } from "./problems.ts";

export interface LoadOptions {
  /** `--set` arguments without the flag: `optimizer.lr=1e-4`. Applied in order. */
  overrides?: readonly string[];
  /** Check that model.path, data.tokenizer and every source exist (default true). */
  checkPaths?: boolean;
  /** Base of relative paths given in overrides (default: process.cwd()). */
  cwd?: string;
}

/** Reads, validates and resolves a job config file. Throws ConfigError listing every problem. */
export function loadConfig(file: string, opts: LoadOptions = {}): JobConfig {
  return parseConfigText(readText(file, file), file, opts);
}

/** As loadConfig, for text already read; `file` names it in problems and anchors its relative paths. */
function parseConfigText(text: string, file: string, opts: LoadOptions = {}): JobConfig {
  const cwd = opts.cwd ?? process.cwd();
  const y = parseYaml(text, file);
  if (y.problems.length) throw new ConfigError(y.problems);
  const raw: unknown = y.doc.toJS() ?? {};
  if (!isMapping(raw)) {
    throw new ConfigError([{ ...whereIn(y, []), path: "", message: "expected a mapping of config sections at the top level" }]);
  }

  const problems: ConfigProblem[] = [];
  const origins = new Origins({ prefix: [], where: (p) => whereIn(y, p), baseDir: dirname(resolve(cwd, file)) });
  const at = (p: KeyPath) => ({ ...origins.of(p).where(p), path: dotted(p) });

  for (const arg of opts.overrides ?? []) {
    const o = parseOverride(arg);
    const problem = "where" in o ? o : applyOverride(raw, o);
    if (problem) problems.push(problem);
    else if (!("where" in o)) origins.add({ prefix: o.path, where: () => ({ where: `--set ${arg}` }), baseDir: cwd });
  }

  for (const section of [["data"], ["data", "eval"]] as const) {
    expandDataset(raw, section, origins, at, problems, cwd);
  }

  for (const p of inputPaths(raw)) {
    const v = getAt(raw, p);
    if (typeof v === "string" && v !== "") setAt(raw, p, resolve(origins.of(p).baseDir, v));
  }

  const parsed = JobConfigSchema.safeParse(raw, { reportInput: true });
  if (!parsed.success) {
    for (const f of findings(parsed.error.issues, JobConfigSchema)) problems.push({ ...at(f.path), message: f.message });
  }
  if (problems.length || !parsed.success) throw new ConfigError(problems);

  if (opts.checkPaths ?? true) {
    for (const p of checkInputs(parsed.data)) problems.push({ ...at(p.path), message: p.message });
    if (problems.length) throw new ConfigError(problems);
  }
  return parsed.data;
}

/** Validates a config that is already plain data (e.g. shipped by the coordinator); paths are taken as they are. */
export function parseConfig(value: unknown): JobConfig {
  const parsed = JobConfigSchema.safeParse(value, { reportInput: true });
  if (parsed.success) return parsed.data;
  throw new ConfigError(findings(parsed.error.issues, JobConfigSchema).map((f) => ({ where: "", path: dotted(f.path), message: f.message })));
}

interface Origin {
  prefix: KeyPath;
  where(path: KeyPath): Pick<ConfigProblem, "where" | "line" | "col">;
  /** Where relative input paths under this prefix are anchored. */
  baseDir: string;
}

/** Which file (or override) each part of the merged config came from. */
class Origins {
  private readonly list: Origin[];
  constructor(root: Origin) {
    this.list = [root];
  }
  add(o: Origin): void {
    this.list.push(o);
  }
  /** The deepest origin whose prefix covers `path`; among equals, the latest (a later --set wins). */
  of(path: KeyPath): Origin {
    let best = this.list[0]!;
    for (const o of this.list) {
      const covers = o.prefix.length <= path.length && o.prefix.every((k, i) => String(k) === String(path[i]));
      if (covers && o.prefix.length >= best.prefix.length) best = o;
    }
    return best;
  }
}

/** Replaces `dataset: FILE.yaml` in a data section by the sources that file lists. */
function expandDataset(
  raw: Record<string, unknown>,
  section: readonly string[],
  origins: Origins,
  at: (p: KeyPath) => Pick<ConfigProblem, "where" | "path" | "line" | "col">,
  problems: ConfigProblem[],
  cwd: string,
): void {
  const s = getAt(raw, section);
  if (!isMapping(s) || s.dataset === undefined) return;
  const key = [...section, "dataset"];
  const name = s.dataset;
  delete s.dataset;
  if (s.sources !== undefined) {
    problems.push({ ...at(key), message: `give either ${dotted(section)}.sources or ${dotted(section)}.dataset, not both` });
    return;
  }
  if (typeof name !== "string" || name === "") {
    problems.push({ ...at(key), message: "expected the path of a dataset YAML file" });
    return;
  }
  const abs = resolve(origins.of(key).baseDir, name);
  let text: string;
  try {
    text = readText(abs, displayPath(abs, cwd));
  } catch (err) {
    problems.push({ ...at(key), message: (err as ConfigError).problems[0]!.message });
    return;
  }
  const dy: ParsedYaml = parseYaml(text, displayPath(abs, cwd));
  if (dy.problems.length) {
    problems.push(...dy.problems);
    return;
  }
  const ds: unknown = dy.doc.toJS();
  if (!isMapping(ds) || !Array.isArray(ds.sources)) {
    problems.push({ ...whereIn(dy, []), path: "", message: "a dataset file is a mapping with a list `sources`" });
    return;
  }
  for (const k of Object.keys(ds)) {
    if (k !== "sources") problems.push({ ...whereIn(dy, [k]), path: k, message: "unknown key (a dataset file holds only sources)" });
  }
  for (const src of ds.sources) {
    if (isMapping(src) && typeof src.path === "string" && src.path !== "") src.path = resolve(dirname(abs), src.path);
  }
  s.sources = ds.sources;
  const depth = section.length + 1;
  origins.add({
    prefix: [...section, "sources"],
    where: (p) => whereIn(dy, ["sources", ...p.slice(depth)]),
    baseDir: dirname(abs),
  });
}

function inputPaths(raw: Record<string, unknown>): KeyPath[] {
  const out: KeyPath[] = [["model", "path"], ["data", "tokenizer"]];
  for (const section of [["data"], ["data", "eval"]]) {
    const sources = getAt(raw, [...section, "sources"]);
    if (Array.isArray(sources)) sources.forEach((_, i) => out.push([...section, "sources", i, "path"]));
  }
  return out;
}

function checkInputs(c: JobConfig): { path: KeyPath; message: string }[] {
  const out: { path: KeyPath; message: string }[] = [];
  const need = (path: KeyPath, p: string, inside: string[] = []) => {
    if (!existsSync(p)) out.push({ path, message: `not found: ${p}` });
    else if (inside.length && !(statSync(p).isDirectory() && inside.every((f) => existsSync(join(p, f))))) {
      out.push({ path, message: `expected a folder holding ${inside.join(" and ")}: ${p}` });
    }
  };
  if (c.model.path !== undefined) need(["model", "path"], c.model.path, ["config.json"]);
  need(["data", "tokenizer"], c.data.tokenizer, ["tokenizer.json", "tokenizer_config.json"]);
  c.data.sources.forEach((s, i) => need(["data", "sources", i, "path"], s.path));
  c.data.eval?.sources.forEach((s, i) => need(["data", "eval", "sources", i, "path"], s.path));
  return out;
}

function readText(file: string, shown: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new ConfigError([{ where: shown, path: "", message: e.code === "ENOENT" ? "file not found" : `cannot read: ${e.message}` }]);
  }
}

function displayPath(abs: string, cwd: string): string {
  const rel = relative(cwd, abs);
  return rel.startsWith("..") || isAbsolute(rel) ? abs : rel;
}

function isMapping(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function getAt(root: unknown, path: KeyPath): unknown {
  let node = root;
  for (const k of path) {
    if (typeof node !== "object" || node === null) return undefined;
    node = (node as Record<string, unknown>)[String(k)];
  }
  return node;
}

function setAt(root: unknown, path: KeyPath, value: unknown): void {
  const parent = getAt(root, path.slice(0, -1)) as Record<string, unknown>;
  parent[String(path[path.length - 1])] = value;
}
