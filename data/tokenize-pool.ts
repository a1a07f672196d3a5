// Tokenization in worker threads. Each worker loads the tokenizer once; records go out in
// batches to the least-busy worker and results come back in the order the batches were sent.
import { Worker } from "node:worker_threads";
import { DataError } from "./errors.ts";
import { TesseraTokenizer } from "./tokenizer.ts";
import type { DataRecord } from "./types.ts";

export type TokenizeResult = ReturnType<TesseraTokenizer["tokenizeRecord"]>;
export interface WorkerRequest {
  id: number;
  records: DataRecord[];
}
export interface WorkerResponse {
  id: number;
  results: TokenizeResult[];
}

/** Tokenizes batches of records; `tokenize` resolves in any order, callers keep order. */
export interface RecordTokenizer {
  readonly parallelism: number;
  tokenize(records: DataRecord[]): Promise<TokenizeResult[]>;
  close(): Promise<void>;
}

export class InlineTokenizer implements RecordTokenizer {
  readonly parallelism = 1;
  constructor(
    private readonly tok: TesseraTokenizer,
    private readonly multimodal: boolean,
  ) {}

  async tokenize(records: DataRecord[]): Promise<TokenizeResult[]> {
    return records.map((r) => this.tok.tokenizeRecord(r, this.multimodal));
  }

  async close(): Promise<void> {}
}

interface Slot {
  worker: Worker;
  busy: number;
  pending: Map<number, { resolve: (r: TokenizeResult[]) => void; reject: (e: Error) => void }>;
}

export class WorkerTokenizer implements RecordTokenizer {
  private nextId = 0;
  private failure: Error | undefined;

  private constructor(private readonly slots: Slot[]) {}

  get parallelism(): number {
    return this.slots.length;
  }

  static async start(dir: string, workers: number, multimodal: boolean): Promise<WorkerTokenizer> {
    const slots: Slot[] = [];
    const pool = new WorkerTokenizer(slots);
    const ready: Promise<void>[] = [];
    for (let i = 0; i < workers; i++) {
      const worker = new Worker(new URL("./tokenize-worker.mjs", import.meta.url), {
        workerData: { dir, multimodal },
      });
      const slot: Slot = { worker, busy: 0, pending: new Map() };
      slots.push(slot);
      ready.push(
        new Promise<void>((resolve, reject) => {
          worker.once("error", reject);
          worker.once("message", () => resolve());
        }),
      );
      worker.on("message", (m: WorkerResponse | { ready: true }) => {
        if (!("id" in m)) return;
        const p = slot.pending.get(m.id);
        slot.pending.delete(m.id);
        slot.busy--;
        p?.resolve(m.results);
      });
      worker.on("error", (err) => pool.fail(new DataError(`tokenizer worker failed: ${err.message}`)));
      worker.on("exit", (code) => {
        if (slot.pending.size) pool.fail(new DataError(`tokenizer worker exited (code ${code}) with work pending`));
      });
    }
    try {
      await Promise.all(ready);
    } catch (err) {
      await pool.close();
      throw new DataError(`cannot start tokenizer workers: ${(err as Error).message}`);
    }
    return pool;
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const s of this.slots) {
      for (const p of s.pending.values()) p.reject(err);
      s.pending.clear();
    }
  }

  tokenize(records: DataRecord[]): Promise<TokenizeResult[]> {
    if (this.failure) return Promise.reject(this.failure);
    const slot = this.slots.reduce((a, b) => (b.busy < a.busy ? b : a));
    const id = this.nextId++;
    slot.busy++;
    return new Promise((resolve, reject) => {
      slot.pending.set(id, { resolve, reject });
      slot.worker.postMessage({ id, records } satisfies WorkerRequest);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}

export async function startTokenizer(dir: string, workers: number, multimodal: boolean): Promise<RecordTokenizer> {
  if (workers <= 1) return new InlineTokenizer(TesseraTokenizer.load(dir), multimodal);
  return WorkerTokenizer.start(dir, workers, multimodal);
}
