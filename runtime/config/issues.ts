// Turns zod issues into messages a user can act on: "expected number, received string",
// "unknown key (did you mean lr?)". An unknown key becomes one problem per key, at the key.
import type * as z from "zod";
import type { KeyPath } from "./problems.ts";

export interface Finding {
  path: KeyPath;
  message: string;
}

export function findings(issues: readonly z.core.$ZodIssue[], schema: z.ZodType): Finding[] {
  const out: Finding[] = [];
  for (const issue of issues) {
    const path = issue.path.filter((k): k is string | number => typeof k !== "symbol");
    if (issue.code === "unrecognized_keys") {
      const known = knownKeys(schema, path);
      for (const key of issue.keys) {
        const near = nearest(key, known);
        out.push({ path: [...path, key], message: `unknown key${near ? ` (did you mean ${near}?)` : ""}` });
      }
    } else {
      out.push({ path, message: describe(issue) });
    }
  }
  return out;
}

function describe(issue: z.core.$ZodIssue): string {
  const input = (issue as { input?: unknown }).input;
  switch (issue.code) {
    case "invalid_type": {
      const expected = issue.expected === "int" ? "integer" : issue.expected;
      if (input === undefined) return `required (expected ${expected})`;
      // An integer check on a number reports the number, which says more than its type.
      const received = typeof input === "number" ? String(input) : typeName(input);
      return `expected ${expected}, received ${received}`;
    }
    case "invalid_value":
      return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}, received ${show(input)}`;
    case "too_small":
    case "too_big": {
      const small = issue.code === "too_small";
      const inclusive = issue.inclusive !== false;
      const bound = Number(small ? issue.minimum : issue.maximum);
      if (issue.origin === "array" || issue.origin === "string") {
        const n = inclusive ? bound : small ? bound + 1 : bound - 1;
        const unit = issue.origin === "array" ? "item" : "character";
        return `expected ${small ? "at least" : "at most"} ${n} ${unit}${n === 1 ? "" : "s"}, received ${show(input)}`;
      }
      return `expected ${small ? ">" : "<"}${inclusive ? "=" : ""} ${bound}, received ${show(input)}`;
    }
    default:
      return issue.message.replace(/^Invalid input: /, "");
  }
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  return typeof v;
}

function show(v: unknown): string {
  if (Array.isArray(v)) return `array of ${v.length}`;
  if (typeof v === "object" && v !== null) return "mapping";
  return JSON.stringify(v) ?? String(v);
}

interface Def {
  type: string;
  shape?: Record<string, z.ZodType>;
  innerType?: z.ZodType;
  in?: z.ZodType;
  element?: z.ZodType;
  items?: z.ZodType[];
}

const defOf = (s: z.ZodType): Def => (s as unknown as { _zod: { def: Def } })._zod.def;

/** The keys an object schema at `path` accepts (through defaults, optionals, pipes, arrays). */
function knownKeys(schema: z.ZodType, path: KeyPath): string[] {
  let s: z.ZodType | undefined = schema;
  let i = 0;
  while (s) {
    const d = defOf(s);
    if (d.innerType) s = d.innerType;
    else if (d.type === "pipe") s = d.in;
    else if (i === path.length) return d.shape ? Object.keys(d.shape) : [];
    else if (d.shape) s = d.shape[String(path[i++])];
    else if (d.element) (s = d.element), i++;
    else if (d.items) s = d.items[Number(path[i++])];
    else return [];
  }
  return [];
}

function nearest(key: string, known: string[]): string | undefined {
  let best: string | undefined;
  let bestD = Math.max(2, Math.floor(key.length / 3)) + 1;
  for (const k of known) {
    const d = editDistance(key, k);
    if (d < bestD) (best = k), (bestD = d);
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}
