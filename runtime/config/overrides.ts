// `--set a.b=c` overrides. The value is read as YAML (scalar or flow collection), so
// `mesh.fsdp=2` is a number, `optimizer.betas=[0.9,0.95]` a list, `model.path=/x` a string.
import { parse as parseYamlValue } from "yaml";
import type { ConfigProblem, KeyPath } from "./problems.ts";

export interface Override {
  /** The argument as given, which is how problems name it: `--set key=value`. */
  arg: string;
  path: KeyPath;
  value: unknown;
}

export function parseOverride(arg: string): Override | ConfigProblem {
  const where = `--set ${arg}`;
  const eq = arg.indexOf("=");
  const key = eq < 0 ? "" : arg.slice(0, eq);
  if (eq < 0 || key.split(".").some((s) => s.trim() === "")) {
    return { where, path: "", message: "expected KEY.PATH=VALUE, e.g. --set optimizer.lr=1e-4" };
  }
  let value: unknown;
  try {
    value = parseYamlValue(arg.slice(eq + 1));
  } catch (err) {
    return { where, path: key, message: `value is not YAML: ${(err as Error).message.split("\n")[0]}` };
  }
  return { arg, path: key.split("."), value };
}

/** Sets the override into `root` in place, creating mappings on the way; a problem when a scalar is in the way. */
export function applyOverride(root: Record<string, unknown>, o: Override): ConfigProblem | undefined {
  let node: unknown = root;
  for (let i = 0; i < o.path.length; i++) {
    const seg = o.path[i]!;
    const last = i === o.path.length - 1;
    if (Array.isArray(node)) {
      const idx = Number(seg);
      if (!Number.isInteger(idx) || idx < 0 || idx > node.length) {
        return { where: `--set ${o.arg}`, path: o.path.slice(0, i).join("."), message: `list of ${node.length} has no index ${seg}` };
      }
      if (last) node[idx] = o.value;
      else node = node[idx] ??= {};
    } else if (typeof node === "object" && node !== null) {
      const map = node as Record<string, unknown>;
      if (last) map[seg] = o.value;
      else {
        if (map[seg] === undefined || map[seg] === null) map[seg] = {};
        node = map[seg];
      }
    } else {
      return { where: `--set ${o.arg}`, path: o.path.slice(0, i).join("."), message: `is ${JSON.stringify(node)}, not a mapping` };
    }
  }
  return undefined;
}
