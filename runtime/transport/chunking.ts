// Messages larger than a NATS server's `max_payload` travel as several chunks and are
// reassembled by the receiver. The chunks of one message share an id and carry, in one
// header, `<id> <index> <count> <totalBytes>`. NATS keeps the order of messages from one
// connection to one subject, so chunks arrive in order and a message is complete when its
// last chunk arrives; a small message sent after a chunked one by the same sender therefore
// also arrives after it (FIFO per sender holds across chunking). A gap in the indices means
// chunks were lost (a connection dropped mid-message): the message is dropped, like any
// message lost to a disconnect. A message whose remaining chunks never come (its sender
// died) is dropped after a timeout, so partial messages cannot pile up.

/** Header that marks a chunk; reserved for the transport. */
export const CHUNK_HEADER = "tessera-chunk";

export interface ChunkInfo {
  readonly id: string;
  readonly index: number;
  readonly count: number;
  readonly totalBytes: number;
}

export function formatChunkHeader(c: ChunkInfo): string {
  return `${c.id} ${c.index} ${c.count} ${c.totalBytes}`;
}

/** Parses a chunk header; undefined when it is malformed (never thrown: it came off a wire). */
export function parseChunkHeader(value: string): ChunkInfo | undefined {
  const parts = value.split(" ");
  if (parts.length !== 4) return undefined;
  const [id, i, n, t] = parts as [string, string, string, string];
  const index = Number(i);
  const count = Number(n);
  const totalBytes = Number(t);
  const ok =
    id.length > 0 &&
    Number.isSafeInteger(index) &&
    Number.isSafeInteger(count) &&
    Number.isSafeInteger(totalBytes) &&
    index >= 0 &&
    count > 0 &&
    index < count &&
    totalBytes >= 0;
  return ok ? { id, index, count, totalBytes } : undefined;
}

/** Views of `bytes`, each at most `chunkBytes` long (no copies). */
export function splitBytes(bytes: Uint8Array, chunkBytes: number): Uint8Array[] {
  if (!(chunkBytes > 0)) throw new RangeError(`chunk size must be positive, got ${chunkBytes}`);
  const out: Uint8Array[] = [];
  for (let off = 0; off < bytes.byteLength; off += chunkBytes) {
    out.push(bytes.subarray(off, Math.min(off + chunkBytes, bytes.byteLength)));
  }
  if (out.length === 0) out.push(bytes);
  return out;
}

interface PartialMessage<M> {
  readonly parts: Uint8Array[];
  readonly count: number;
  readonly totalBytes: number;
  readonly meta: M;
  filled: number;
  touchedAt: number;
}

export type ChunkOutcome<M> =
  | { readonly kind: "pending" }
  | { readonly kind: "complete"; readonly bytes: Uint8Array; readonly meta: M }
  /** The chunk does not fit the message it claims to belong to; the message is dropped. */
  | { readonly kind: "dropped"; readonly reason: string };

/**
 * Reassembles chunked messages. `meta` (headers, reply subject) is taken from chunk 0,
 * the only chunk that carries it. Chunks are kept as they came and joined once complete, so
 * memory follows the bytes that arrived, not the size a (possibly hostile) header claims.
 */
export class Reassembler<M> {
  private readonly partials = new Map<string, PartialMessage<M>>();

  /** @param maxBytes largest message accepted. */
  constructor(
    private readonly timeoutMs: number,
    private readonly maxBytes: number,
  ) {}

  /** Messages waiting for more chunks. */
  get size(): number {
    return this.partials.size;
  }

  add(info: ChunkInfo, data: Uint8Array, meta: () => M, now = Date.now()): ChunkOutcome<M> {
    let p = this.partials.get(info.id);
    if (!p) {
      if (info.index !== 0) return { kind: "dropped", reason: `chunk ${info.index} of a message whose start was lost` };
      if (info.totalBytes > this.maxBytes) {
        return { kind: "dropped", reason: `chunked message of ${info.totalBytes} bytes exceeds ${this.maxBytes}` };
      }
      p = { parts: [], count: info.count, totalBytes: info.totalBytes, meta: meta(), filled: 0, touchedAt: now };
      this.partials.set(info.id, p);
    }
    const fits = p.filled + data.byteLength <= p.totalBytes;
    if (info.index !== p.parts.length || info.count !== p.count || info.totalBytes !== p.totalBytes || !fits) {
      this.partials.delete(info.id);
      return { kind: "dropped", reason: `chunk ${info.index}/${info.count} does not continue its message` };
    }
    p.parts.push(data);
    p.filled += data.byteLength;
    p.touchedAt = now;
    if (p.parts.length < p.count) return { kind: "pending" };
    this.partials.delete(info.id);
    if (p.filled !== p.totalBytes) {
      return { kind: "dropped", reason: `chunked message has ${p.filled} of ${p.totalBytes} bytes` };
    }
    const bytes = new Uint8Array(p.totalBytes);
    let off = 0;
    for (const part of p.parts) {
      bytes.set(part, off);
      off += part.byteLength;
    }
    return { kind: "complete", bytes, meta: p.meta };
  }

  /** Drops messages that got no chunk for `timeoutMs`; returns how many. */
  sweep(now = Date.now()): number {
    let dropped = 0;
    for (const [id, p] of this.partials) {
      if (now - p.touchedAt >= this.timeoutMs) {
        this.partials.delete(id);
        dropped += 1;
      }
    }
    return dropped;
  }

  clear(): void {
    this.partials.clear();
  }
}
