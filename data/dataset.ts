// The sources a job reads: a list in the options, a dataset YAML, or one path.
import { readFileSync } from "node:fs";
import { dirname, isAbsolute, join } from "node:path";
import { parse } from "yaml";
import { z } from "zod";
import { DataError } from "./errors.ts";
import type { DataOptions, SourceSpec } from "./types.ts";

const sourceSchema = z
  .object({
    path: z.string().min(1),
    format: z.enum(["jsonl", "json", "csv", "arrow", "parquet"]).optional(),
    weight: z.number().nonnegative().optional(),
    split: z.string().optional(),
    text_field: z.string().optional(),
    messages_field: z.string().optional(),
  })
  .strict();

/** A dataset YAML: `sources: [...]` (or a bare list); paths relative to the YAML's folder. */
const datasetSchema = z.union([z.object({ sources: z.array(sourceSchema).min(1) }).strict(), z.array(sourceSchema).min(1)]);

export function loadDatasetYaml(file: string): SourceSpec[] {
  let raw: unknown;
  try {
    raw = parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new DataError(`cannot read dataset ${file}: ${(err as Error).message}`);
  }
  const r = datasetSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new DataError(`dataset ${file}: ${issue.path.join(".") || "(top)"}: ${issue.message}`);
  }
  const list = Array.isArray(r.data) ? r.data : r.data.sources;
  const base = dirname(file);
  return list.map((s) => ({ ...s, path: isAbsolute(s.path) ? s.path : join(base, s.path) }));
}

export function sourceSpecs(opts: DataOptions): SourceSpec[] {
  const given = [opts.sources, opts.dataset, opts.path].filter((x) => x !== undefined).length;
  if (given !== 1) throw new DataError("data: give exactly one of sources, dataset or path");
  if (opts.sources) {
    if (opts.sources.length === 0) throw new DataError("data: sources is empty");
    return opts.sources.map((s, i) => {
      const r = sourceSchema.safeParse(s);
      if (!r.success) throw new DataError(`data.sources[${i}]: ${r.error.issues[0]!.message}`);
      return r.data;
    });
  }
  if (opts.dataset) return loadDatasetYaml(opts.dataset);
  const path = opts.path!;
  if (/\.ya?ml$/i.test(path)) return loadDatasetYaml(path);
  return [{ path }];
}
