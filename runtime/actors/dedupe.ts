// Remembers the outcome of recently accepted messages by id, so that a retried message (same
// id, e.g. resent after a reconnect) is answered with the first outcome instead of running its
// handler again. Holding the promise, not the value, makes a duplicate that arrives while the
// first is still queued or running wait for that same outcome.
//
// Bounded LRU: a Map keeps insertion order, and a hit re-inserts its key at the end.
export class OutcomeCache<T> {
  private readonly entries = new Map<string, Promise<T>>();

  constructor(readonly capacity: number) {
    if (!(capacity >= 1)) throw new RangeError(`dedupe capacity must be >= 1, got ${capacity}`);
  }

  get(id: string): Promise<T> | undefined {
    const hit = this.entries.get(id);
    if (hit) {
      this.entries.delete(id);
      this.entries.set(id, hit);
    }
    return hit;
  }

  set(id: string, outcome: Promise<T>): void {
    this.entries.delete(id);
    this.entries.set(id, outcome);
    if (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  delete(id: string): void {
    this.entries.delete(id);
  }

  get size(): number {
    return this.entries.size;
  }
}
