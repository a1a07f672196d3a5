import type { RecordLocation } from "../types.ts";

/** Where a file's reading resumes: a byte offset (text formats) and a count of lines (text
 *  formats: newlines before `offset`) or rows (columnar formats) already behind. */
export interface FilePosition {
  offset: number;
  row: number;
}

/** One row as read from a file: a parsed value, or why it could not be parsed. */
export interface RawItem {
  value?: unknown;
  error?: string;
  where: RecordLocation;
  /** The position just after this row. */
  next: FilePosition;
}

export type FileReader = (path: string, from: FilePosition) => AsyncGenerator<RawItem>;

/** Text formats are read in chunks of this many bytes: never whole. */
export const CHUNK_BYTES = 1 << 20;
