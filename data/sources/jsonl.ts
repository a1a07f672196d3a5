// JSON Lines: one JSON value per line, read in chunks. Lines are split on bytes (0x0A never
// occurs inside a UTF-8 multi-byte sequence), so byte offsets for resume are exact.
import { createReadStream } from "node:fs";
import { CHUNK_BYTES, type FilePosition, type RawItem } from "./raw.ts";

const NL = 0x0a;
const decoder = new TextDecoder("utf-8", { fatal: true });

export async function* readJsonl(path: string, from: FilePosition): AsyncGenerator<RawItem> {
  let offset = from.offset;
  let line = from.row;
  let carry: Buffer | null = null;
  for await (const chunk of createReadStream(path, { start: from.offset, highWaterMark: CHUNK_BYTES })) {
    let buf = chunk as Buffer;
    if (carry) {
      buf = Buffer.concat([carry, buf]);
      carry = null;
    }
    let start = 0;
    for (;;) {
      const nl = buf.indexOf(NL, start);
      if (nl < 0) break;
      const item = parseLine(path, buf.subarray(start, nl), ++line);
      offset += nl + 1 - start;
      start = nl + 1;
      if (item) yield { ...item, next: { offset, row: line } };
    }
    carry = start < buf.length ? Buffer.from(buf.subarray(start)) : null;
  }
  if (carry && carry.length) {
    const item = parseLine(path, carry, ++line);
    offset += carry.length;
    if (item) yield { ...item, next: { offset, row: line } };
  }
}

function parseLine(path: string, bytes: Buffer, line: number): Omit<RawItem, "next"> | null {
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch {
    return { error: "invalid UTF-8", where: { file: path, line } };
  }
  if (line === 1 && text.charCodeAt(0) === 0xfeff) text = text.slice(1); // a byte-order mark
  if (text.trim() === "") return null;
  try {
    return { value: JSON.parse(text), where: { file: path, line } };
  } catch (err) {
    return { error: `malformed JSON: ${(err as Error).message}`, where: { file: path, line } };
  }
}
