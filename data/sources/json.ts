// A JSON file holding one array of records, streamed element by element: a byte scanner
// tracks strings and nesting to find each top-level element, which alone is parsed. So a
// large array never sits whole in memory, and byte offsets for resume are exact.
import { createReadStream } from "node:fs";
import { CHUNK_BYTES, type FilePosition, type RawItem } from "./raw.ts";

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const LF = 0x0a;
const OPEN = new Set([0x5b, 0x7b]); // [ {
const CLOSE = new Set([0x5d, 0x7d]); // ] }
const COMMA = 0x2c;
const BOM = [0xef, 0xbb, 0xbf];
const isSpace = (b: number): boolean => b === 0x20 || b === 0x09 || b === LF || b === 0x0d;

const utf8 = new TextDecoder("utf-8", { fatal: true });

export async function* readJsonArray(path: string, from: FilePosition): AsyncGenerator<RawItem> {
  let opened = from.offset > 0; // past the array's '[' already when resuming
  let ended = false;
  let depth = 0;
  let inString = false;
  let escaped = false;
  let parts: Buffer[] = [];
  let inElement = false;
  let line = from.row;
  let elementLine = 0;
  let base = from.offset;

  for await (const chunk of createReadStream(path, { start: from.offset, highWaterMark: CHUNK_BYTES })) {
    const buf = chunk as Buffer;
    let seg = 0;
    const out: RawItem[] = [];
    const finish = (i: number, after = i): void => {
      parts.push(buf.subarray(seg, i));
      const bytes = Buffer.concat(parts);
      parts = [];
      inElement = false;
      const where = { file: path, line: elementLine };
      const next = { offset: base + after, row: line };
      try {
        out.push({ value: JSON.parse(utf8.decode(bytes)), where, next });
      } catch (err) {
        out.push({ error: `malformed JSON element: ${(err as Error).message}`, where, next });
      }
    };
    for (let i = 0; i < buf.length; i++) {
      const b = buf[i]!;
      if (b === LF) line++;
      if (ended) {
        if (!isSpace(b)) throw new Error(`${path}:${line + 1}: unexpected data after the JSON array`);
        continue;
      }
      if (!opened) {
        if (isSpace(b) || (base + i < 3 && BOM.includes(b))) continue;
        if (b !== 0x5b) throw new Error(`${path}:${line + 1}: a JSON source must hold one array of records`);
        opened = true;
        continue;
      }
      if (!inElement) {
        if (isSpace(b) || b === COMMA) continue;
        if (b === 0x5d) {
          ended = true;
          continue;
        }
        inElement = true;
        elementLine = line + 1;
        seg = i;
        depth = 0;
      }
      if (inString) {
        if (escaped) escaped = false;
        else if (b === BACKSLASH) escaped = true;
        else if (b === QUOTE) inString = false;
        continue;
      }
      if (b === QUOTE) inString = true;
      else if (OPEN.has(b)) depth++;
      else if (CLOSE.has(b)) {
        if (depth === 0) {
          // a scalar element ends at the array's closing bracket
          finish(i);
          ended = true;
          continue;
        }
        depth--;
        if (depth === 0) finish(i + 1);
      } else if (depth === 0 && (b === COMMA || isSpace(b))) finish(i, i + 1); // the separator is behind us
    }
    if (inElement) parts.push(Buffer.from(buf.subarray(seg)));
    base += buf.length;
    yield* out;
  }
  if (inElement || (opened && !ended)) throw new Error(`${path}: the JSON array is not closed`);
}
