import type { RecordLocation } from "./types.ts";

/** A data problem that stops the pipeline: bad config, unreadable file, or a bad record under
 *  `on_bad_record: fail`. The message names the file (and line or row) where there is one. */
export class DataError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DataError";
  }
}

export function describeLocation(w: RecordLocation): string {
  if (w.line !== undefined) return `${w.file}:${w.line}`;
  if (w.row !== undefined) return `${w.file} row ${w.row}`;
  return w.file;
}
