// Writes a file as a sequence of byte pieces in one pass, fast, and optionally sha256s exactly
// the bytes that go out (so no one has to read the file back to learn its hash).
//
// Each piece is hashed on the main thread as it is handed over, in file order; small pieces
// are gathered into a staging buffer, large ones are written from their own memory in slices
// (no copy). Up to IN_FLIGHT positioned writes run at once in libuv's thread pool, so the disk
// keeps busy while the main thread hashes the next slice or produces the next tensor (a copy
// from the device). A piece's memory must not change until end() has resolved.
import { createHash, type Hash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";

/** Largest single write: big enough that per-call costs vanish, small enough to pipeline hashing and writing. */
const SLICE_BYTES = 32 << 20;
/** Pieces below this are copied into the staging buffer rather than written on their own. */
const GATHER_BELOW = 4 << 20;
const IN_FLIGHT = 4;

export interface SinkResult {
  bytes: number;
  /** Hex sha256 of every byte written, when asked for. */
  sha256?: string;
}

export class FileSink {
  readonly #fh: FileHandle;
  readonly #hash: Hash | undefined;
  #pos = 0;
  #staging: Buffer | undefined;
  #staged = 0;
  #stagedAt = 0;
  readonly #inFlight: Promise<void>[] = [];
  #error: unknown;

  constructor(fh: FileHandle, opts: { sha256?: boolean } = {}) {
    this.#fh = fh;
    this.#hash = opts.sha256 ? createHash("sha256") : undefined;
  }

  /** Appends `bytes` to the file (hashed now, written soon). */
  async put(bytes: Uint8Array): Promise<void> {
    if (bytes.length < GATHER_BELOW) {
      if (this.#staged + bytes.length > SLICE_BYTES) await this.#flushStaging();
      if (!this.#staging) {
        this.#staging = Buffer.allocUnsafeSlow(SLICE_BYTES);
        this.#stagedAt = this.#pos;
      }
      this.#staging.set(bytes, this.#staged);
      this.#staged += bytes.length;
      this.#hash?.update(bytes);
      this.#pos += bytes.length;
      return;
    }
    await this.#flushStaging();
    for (let off = 0; off < bytes.length; off += SLICE_BYTES) {
      const slice = bytes.subarray(off, Math.min(bytes.length, off + SLICE_BYTES));
      this.#hash?.update(slice);
      await this.#issue(slice, this.#pos);
      this.#pos += slice.length;
    }
  }

  /** Waits for every write; the size and hash of what was written. The caller syncs and closes the handle. */
  async end(): Promise<SinkResult> {
    await this.#flushStaging();
    await Promise.all(this.#inFlight.splice(0));
    if (this.#error !== undefined) throw this.#error;
    return { bytes: this.#pos, ...(this.#hash ? { sha256: this.#hash.digest("hex") } : {}) };
  }

  async #flushStaging(): Promise<void> {
    if (!this.#staging || this.#staged === 0) return;
    const full = this.#staging.subarray(0, this.#staged);
    const at = this.#stagedAt;
    // A fresh buffer next time: this one stays untouched until its write is done.
    this.#staging = undefined;
    this.#staged = 0;
    await this.#issue(full, at);
  }

  async #issue(bytes: Uint8Array, at: number): Promise<void> {
    while (this.#inFlight.length >= IN_FLIGHT) await this.#inFlight.shift();
    if (this.#error !== undefined) throw this.#error;
    // Failures are kept (never an unhandled rejection) and thrown by the next put or by end().
    this.#inFlight.push(
      writeAll(this.#fh, bytes, at).catch((err: unknown) => {
        this.#error ??= err;
      }),
    );
  }
}

async function writeAll(fh: FileHandle, bytes: Uint8Array, at: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, at + done);
    done += bytesWritten;
  }
}
