// Source positions of YAML nodes, so that a problem found on the parsed value can name the
// line it came from.
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Document } from "yaml";
import type { ConfigProblem, KeyPath } from "./problems.ts";

export interface ParsedYaml {
  file: string;
  doc: Document;
  lines: LineCounter;
  /** YAML syntax errors, with positions. */
  problems: ConfigProblem[];
}

export function parseYaml(text: string, file: string): ParsedYaml {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const problems = doc.errors.map((e): ConfigProblem => {
    const { line, col } = lines.linePos(e.pos[0]);
    // The message's first line; later lines are a source excerpt we do not need.
    return { where: `${file}:${line}:${col}`, path: "", message: `YAML ${e.code}: ${e.message.split("\n")[0]}`, line, col };
  });
  return { file, doc, lines, problems };
}

/**
 * The position of `path` in the document: the key of a mapping entry or the start of a
 * sequence item. A path that runs past what the file holds (a missing key) gets the position
 * of its deepest existing ancestor; undefined when not even the first key is in the file.
 */
export function locate(y: ParsedYaml, path: KeyPath): { line: number; col: number } | undefined {
  let node: unknown = y.doc.contents;
  let offset: number | undefined;
  for (const seg of path) {
    if (isAlias(node)) node = node.resolve(y.doc);
    let next: unknown;
    if (isMap(node)) {
      const pair = node.items.find((p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)) === String(seg));
      if (!pair) break;
      offset = (isScalar(pair.key) ? pair.key.range?.[0] : undefined) ?? offset;
      next = pair.value;
    } else if (isSeq(node) && typeof seg === "number") {
      next = node.items[seg];
      if (next === undefined) break;
      offset = (next as { range?: [number, number, number] }).range?.[0] ?? offset;
    } else {
      break;
    }
    node = next;
  }
  return offset === undefined ? undefined : y.lines.linePos(offset);
}

export function whereIn(y: ParsedYaml, path: KeyPath): Pick<ConfigProblem, "where" | "line" | "col"> {
  const pos = locate(y, path);
  return pos ? { where: `${y.file}:${pos.line}:${pos.col}`, line: pos.line, col: pos.col } : { where: y.file };
}
