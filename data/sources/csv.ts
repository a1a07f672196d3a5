// CSV per RFC 4180: a header row names the columns; fields may be quoted; inside quotes a
// doubled quote is a quote and commas and line breaks are data; records end at LF, CRLF or a
// lone CR.
// The parser works on bytes (the delimiters are ASCII, which never occurs inside a UTF-8
// multi-byte sequence) in chunks, so a file of any size streams and byte offsets are exact.
// Leniency: a quote inside an unquoted field is kept as data; blank lines are skipped.
import { createReadStream } from "node:fs";
import { CHUNK_BYTES, type FilePosition, type RawItem } from "./raw.ts";

const QUOTE = 0x22;
const COMMA = 0x2c;
const CR = 0x0d;
const LF = 0x0a;

// parser states
const FIELD_START = 0;
const UNQUOTED = 1;
const QUOTED = 2;
const QUOTE_IN_QUOTED = 3;
const AFTER_CR = 4;
const SKIP_LINE = 5;

export interface CsvRow {
  fields?: string[];
  error?: string;
  /** Line where the record starts (1-based). */
  line: number;
  next: FilePosition;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Rows of a CSV file from a byte offset; `from.row` counts the line breaks before it. */
export async function* csvRows(path: string, from: FilePosition): AsyncGenerator<CsvRow> {
  let state: number = FIELD_START;
  let parts: Buffer[] = [];
  let fields: string[] = [];
  let error: string | undefined;
  let line = from.row; // line breaks seen so far
  let recordLine = line + 1;
  let base = from.offset;

  const takeField = (): void => {
    const bytes = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    parts = [];
    try {
      fields.push(utf8.decode(bytes));
    } catch {
      error ??= "invalid UTF-8";
      fields.push("");
    }
  };
  const takeRecord = (end: number): CsvRow | null => {
    const row: CsvRow = { line: recordLine, next: { offset: end, row: line } };
    const blank = fields.length === 1 && fields[0] === "";
    if (error) row.error = error;
    else row.fields = fields;
    fields = [];
    error = undefined;
    recordLine = line + 1;
    return blank && !row.error ? null : row;
  };

  for await (const chunk of createReadStream(path, { start: from.offset, highWaterMark: CHUNK_BYTES })) {
    const buf = chunk as Buffer;
    let seg = 0;
    const out: CsvRow[] = [];
    for (let i = 0; i < buf.length; i++) {
      const b = buf[i]!;
      if (state === AFTER_CR) {
        state = FIELD_START;
        if (b === LF) {
          // CRLF: the CR already counted the line break; the record resumes after the LF
          const last = out[out.length - 1];
          if (last) last.next = { offset: base + i + 1, row: line };
          continue;
        }
        // a lone CR ended the record: this byte starts the next one
      }
      if (state === FIELD_START) {
        if (b === QUOTE) {
          state = QUOTED;
          seg = i + 1;
          continue;
        }
        seg = i;
        state = UNQUOTED;
      }
      if (state === UNQUOTED) {
        if (b === COMMA) {
          parts.push(buf.subarray(seg, i));
          takeField();
          state = FIELD_START;
        } else if (b === LF || b === CR) {
          parts.push(buf.subarray(seg, i));
          takeField();
          line++;
          const r = takeRecord(base + i + 1);
          if (r) out.push(r);
          state = b === CR ? AFTER_CR : FIELD_START;
        }
      } else if (state === QUOTED) {
        if (b === QUOTE) {
          parts.push(buf.subarray(seg, i));
          state = QUOTE_IN_QUOTED;
        } else if (b === LF) line++;
      } else if (state === QUOTE_IN_QUOTED) {
        if (b === QUOTE) {
          seg = i; // an escaped quote: this one is data
          state = QUOTED;
        } else if (b === COMMA) {
          takeField();
          state = FIELD_START;
        } else if (b === LF || b === CR) {
          takeField();
          line++;
          const r = takeRecord(base + i + 1);
          if (r) out.push(r);
          state = b === CR ? AFTER_CR : FIELD_START;
        } else {
          error ??= `unexpected character ${JSON.stringify(String.fromCharCode(b))} after a closing quote`;
          parts = [];
          state = SKIP_LINE;
        }
      } else if (b === LF || b === CR) {
        // SKIP_LINE: resynchronise at the next line break (LF, CRLF or a lone CR)
        line++;
        fields = [];
        const r = takeRecord(base + i + 1);
        if (r) out.push(r);
        state = b === CR ? AFTER_CR : FIELD_START;
      }
    }
    if (state === QUOTED || state === UNQUOTED) parts.push(Buffer.from(buf.subarray(seg)));
    base += buf.length;
    yield* out;
  }
  if (state === QUOTED) {
    error ??= "unterminated quoted field at end of file";
    fields = [];
    const r = takeRecord(base);
    if (r) yield r;
  } else if (state === UNQUOTED || state === QUOTE_IN_QUOTED || fields.length > 0) {
    takeField();
    const r = takeRecord(base);
    if (r) yield r;
  } else if (state === SKIP_LINE) {
    fields = [];
    const r = takeRecord(base);
    if (r) yield r;
  }
}

/** CSV rows as objects keyed by the header row. */
export async function* readCsv(path: string, from: FilePosition): AsyncGenerator<RawItem> {
  let header: string[] | undefined;
  let headerEnd: FilePosition = { offset: 0, row: 0 };
  for await (const r of csvRows(path, { offset: 0, row: 0 })) {
    if (r.error) throw new Error(`${path}:${r.line}: bad CSV header: ${r.error}`);
    header = r.fields!;
    if (header[0]?.charCodeAt(0) === 0xfeff) header[0] = header[0].slice(1); // a byte-order mark
    headerEnd = r.next;
    break;
  }
  if (!header) return;
  const start = from.offset > headerEnd.offset ? from : headerEnd;
  for await (const r of csvRows(path, start)) {
    const where = { file: path, line: r.line };
    if (r.error) {
      yield { error: `malformed CSV: ${r.error}`, where, next: r.next };
    } else if (r.fields!.length !== header.length) {
      yield {
        error: `malformed CSV: ${r.fields!.length} fields where the header has ${header.length}`,
        where,
        next: r.next,
      };
    } else {
      const value: Record<string, string> = {};
      header.forEach((h, k) => (value[h] = r.fields![k]!));
      yield { value, where, next: r.next };
    }
  }
}
