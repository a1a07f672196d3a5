// Parquet through hyparquet, one row group at a time (never the whole file).
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } from "hyparquet";
import { compressors } from "hyparquet-compressors";
import { toPlainJson } from "./plain.ts";
import type { FilePosition, RawItem } from "./raw.ts";

export async function* readParquet(path: string, from: FilePosition): AsyncGenerator<RawItem> {
  const file = await asyncBufferFromFile(path);
  const metadata = await parquetMetadataAsync(file);
  let start = 0;
  for (const group of metadata.row_groups) {
    const end = start + Number(group.num_rows);
    if (end > from.row) {
      const rowStart = Math.max(start, from.row);
      const rows = await parquetReadObjects({ file, metadata, rowStart, rowEnd: end, compressors });
      for (let k = 0; k < rows.length; k++) {
        const row = rowStart + k;
        yield { value: toPlainJson(rows[k]), where: { file: path, row }, next: { offset: 0, row: row + 1 } };
      }
    }
    start = end;
  }
}
