// The in-process transport: one Node.js process, no wire. Values are handed over as they are
// (zero copies), so a receiver must treat a body as borrowed: it may read it, and keep it,
// but the sender may also still hold it.
//
// Deliveries are queued as microtasks, never run inside `send`/`request`: a sender never
// re-enters a receiver synchronously, and microtasks run in the order they were queued,
// which gives FIFO per sender (indeed FIFO over all senders) for free.
import { decode } from "../codec.ts";
import { AskTimeoutError, NoResponderError, TransportClosedError } from "../errors.ts";
import type { Delivery, Headers, Reply, Served, Transport } from "./types.ts";

type OnDelivery = (d: Delivery) => void;

export class InProcTransport implements Transport {
  readonly kind = "inproc" as const;
  private readonly servers = new Map<string, OnDelivery>();
  private readonly pending = new Set<(err: Error) => void>();
  private closed = false;

  async serve(address: string, onDelivery: OnDelivery): Promise<Served> {
    this.assertOpen();
    // One server per address: an in-process actor is one mailbox. Two would silently split
    // its messages, which is never what a caller wants here.
    if (this.servers.has(address)) throw new Error(`address "${address}" is already served`);
    this.servers.set(address, onDelivery);
    return {
      close: async () => {
        if (this.servers.get(address) === onDelivery) this.servers.delete(address);
      },
    };
  }

  async send(address: string, body: unknown, headers: Headers): Promise<void> {
    this.assertOpen();
    // Like a publish on a wire: a tell to nobody is dropped, not an error.
    this.deliver(address, headers, () => body);
  }

  request(address: string, body: unknown, headers: Headers, timeoutMs: number): Promise<Reply> {
    return this.requestWith(address, headers, timeoutMs, () => body);
  }

  /**
   * Delivers `bytes` as if they had arrived over a wire: the receiver's `body()` decodes them
   * with runtime/codec and throws CodecError when they are not a message. For tests of how
   * receivers treat garbage, and for callers that already hold encoded messages.
   */
  requestEncoded(address: string, bytes: Uint8Array, headers: Headers, timeoutMs: number): Promise<Reply> {
    return this.requestWith(address, headers, timeoutMs, () => decode(bytes));
  }

  /** Fire-and-forget form of `requestEncoded`. */
  async sendEncoded(address: string, bytes: Uint8Array, headers: Headers): Promise<void> {
    this.assertOpen();
    this.deliver(address, headers, () => decode(bytes));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.servers.clear();
    const err = new TransportClosedError("in-process transport closed");
    for (const reject of [...this.pending]) reject(err);
    this.pending.clear();
  }

  private requestWith(address: string, headers: Headers, timeoutMs: number, body: () => unknown): Promise<Reply> {
    if (this.closed) return Promise.reject(new TransportClosedError("in-process transport closed"));
    if (!this.servers.has(address)) {
      return Promise.reject(new NoResponderError(`no one serves "${address}"`));
    }
    return new Promise<Reply>((resolve, reject) => {
      let settled = false;
      const finish = () => {
        settled = true;
        clearTimeout(timer);
        this.pending.delete(fail);
      };
      const fail = (err: Error) => {
        if (settled) return;
        finish();
        reject(err);
      };
      const timer = setTimeout(
        () => fail(new AskTimeoutError(`no reply from "${address}" within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.pending.add(fail);
      const reply = (replyBody: unknown, replyHeaders: Headers = {}) => {
        if (settled) return;
        finish();
        resolve({ body: replyBody, headers: replyHeaders });
      };
      const noResponder = () => fail(new NoResponderError(`no one serves "${address}"`));
      this.deliver(address, headers, body, reply, noResponder);
    });
  }

  private deliver(
    address: string,
    headers: Headers,
    body: () => unknown,
    reply?: (body: unknown, headers?: Headers) => void,
    onNoServer?: () => void,
  ): void {
    const delivery: Delivery = reply ? { address, headers, body, reply } : { address, headers, body };
    queueMicrotask(() => {
      // Looked up when the delivery runs: a server that closed meanwhile gets nothing.
      const target = this.servers.get(address);
      if (target) target(delivery);
      else onNoServer?.();
    });
  }

  private assertOpen(): void {
    if (this.closed) throw new TransportClosedError("in-process transport closed");
  }
}
