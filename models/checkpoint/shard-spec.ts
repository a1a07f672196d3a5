// How a tensor is split over ranks: each rank holds a flat element range [start, end) of the
// row-major tensor. A row range is the flat range of whole rows, so both FSDP's flat-parameter
// sharding and row (dim-0) sharding are this one form, and resharding on load is interval
// arithmetic, whatever the mesh was at save time.

/** Flat elements [start, end) of the row-major tensor. */
export interface ShardRange {
  start: number;
  end: number;
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The whole tensor as a range. */
export function wholeRange(shape: readonly number[]): ShardRange {
  return { start: 0, end: numel(shape) };
}

/**
 * Shard `index` of `count` of a flattened tensor of `n` elements: ceil(n / count) elements
 * each, so the last shards may be shorter or empty (torch FSDP's flat-parameter split).
 */
export function flatShardRange(n: number, index: number, count: number): ShardRange {
  checkIndex(index, count);
  const per = Math.ceil(n / count);
  return { start: Math.min(n, index * per), end: Math.min(n, (index + 1) * per) };
}

/** Shard `index` of `count` along dim 0, as a flat range: ceil(rows / count) whole rows each. */
export function rowShardRange(shape: readonly number[], index: number, count: number): ShardRange {
  checkIndex(index, count);
  const rows = shape[0] ?? 1;
  const rowSize = shape.length === 0 ? 1 : numel(shape.slice(1));
  const r = flatShardRange(rows, index, count);
  return { start: r.start * rowSize, end: r.end * rowSize };
}

function checkIndex(index: number, count: number): void {
  if (!Number.isInteger(count) || count < 1) throw new Error(`shard count must be a positive integer, got ${count}`);
  if (!Number.isInteger(index) || index < 0 || index >= count) throw new Error(`shard index ${index} is outside [0, ${count})`);
}

export function checkRange(r: ShardRange, n: number, what: string): void {
  if (!Number.isSafeInteger(r.start) || !Number.isSafeInteger(r.end) || r.start < 0 || r.end < r.start || r.end > n) {
    throw new Error(`${what}: range [${r.start}, ${r.end}) is not inside [0, ${n})`);
  }
}

/**
 * The shape a piece is stored under in its shard file: the logical shape when whole, whole
 * rows when the range falls on row boundaries (readable as is), else flat.
 */
export function pieceShape(shape: readonly number[], r: ShardRange): number[] {
  const n = numel(shape);
  if (r.start === 0 && r.end === n) return [...shape];
  if (shape.length >= 2) {
    const rowSize = numel(shape.slice(1));
    if (rowSize > 0 && r.start % rowSize === 0 && r.end % rowSize === 0) return [(r.end - r.start) / rowSize, ...shape.slice(1)];
  }
  return [r.end - r.start];
}
