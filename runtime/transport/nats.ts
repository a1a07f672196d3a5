// The NATS transport: addresses become subjects `tessera.<job>.<address>`; bodies are encoded
// with runtime/codec; headers travel as NATS message headers.
//
// Large messages: anything over the server's `max_payload` is split into chunks and
// reassembled by the receiver (see chunking.ts), for sends, requests and replies alike.
//
// Request/reply runs over one inbox subscription per connection (`<inbox>.<correlation id>`),
// not over nats.js's `request`, so that replies can be chunked too. No responders: the
// connection announces `no_responders`, so the server answers a message with a reply
// subject that nobody is subscribed to with a 503 status message on that reply subject,
// which becomes a NoResponderError.
//
// Connection loss (the server restarts, the network blips). nats.js reconnects forever by
// default and re-creates the subscriptions; this transport adds:
// - Messages sent while disconnected are queued here (up to `maxQueuedBytes`) and published,
//   in order, on reconnect: nats.js itself discards what is published while it dials. A tell
//   published before its receiver's own client has re-subscribed is dropped by the server,
//   as any publish to nobody is.
// - A request already published when the connection dropped has an unknown fate: it may
//   have been handled, its reply may be lost. If it carries an `H.id` header it is
//   published again after reconnect with the same id and correlation id (at most once per
//   reconnect): the receiving actor system dedupes by id and answers a repeat with the
//   remembered result, so a retry never runs a handler twice, and the first reply that
//   arrives settles the request; later ones are dropped. Without `H.id` (or with
//   `retryRequestsOnReconnect: false`) it fails with DisconnectedError at once.
// - Just after a reconnect the server may not yet know every subscriber (they re-subscribe
//   when their own clients reconnect), so a no-responders answer within
//   `noResponderGraceMs` of a reconnect is retried with a short backoff instead of failing:
//   a 503 means nobody received the message, so re-publishing it is always safe.
// The transport never delivers one published message twice. Tells are at most once: one
// published in the moment the connection breaks may be lost (the DESIGN's rule: tell is
// never used where that would lose work). FIFO per sender holds for everything published
// once; a re-published request may arrive after messages its sender sent later.
// A closed transport drops what it had queued for a connection that never came back.
import { connect, type NodeConnectionOptions } from "@nats-io/transport-node";
import {
  createInbox,
  headers as natsHeaders,
  nuid,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type Subscription,
} from "@nats-io/nats-core";
import { decode, encode } from "../codec.ts";
import { AskTimeoutError, CodecError, DisconnectedError, NoResponderError, TransportClosedError } from "../errors.ts";
import { CHUNK_HEADER, Reassembler, formatChunkHeader, parseChunkHeader, splitBytes } from "./chunking.ts";
import { H, type Delivery, type Headers, type Reply, type Served, type Transport } from "./types.ts";

export interface NatsTransportOptions {
  /** NATS server URL(s), e.g. `nats://127.0.0.1:4222`. */
  servers: string | string[];
  /** Job name: one subject token (no dots, spaces, `*` or `>`). Namespaces every address. */
  job: string;
  /** Connection name, shown by the server's monitoring. */
  name?: string;
  /** Reconnect attempts per server; -1 (the default) tries forever. */
  maxReconnectAttempts?: number;
  /** Wait between reconnect attempts (default 250 ms, plus up to 50 ms of jitter). */
  reconnectTimeWaitMs?: number;
  /** Timeout of the first connection (default 5000 ms). */
  connectTimeoutMs?: number;
  /** Client pings: a server that answers none of 3 in a row is treated as gone (default 10 s). */
  pingIntervalMs?: number;
  /** Re-publish in-flight requests that carry `H.id` after a reconnect (default true). */
  retryRequestsOnReconnect?: boolean;
  /** After a reconnect, for this long a no-responders answer is retried (default 2000 ms). */
  noResponderGraceMs?: number;
  /** A chunked message that gets no chunk for this long is dropped (default 30 s). */
  reassemblyTimeoutMs?: number;
  /** Largest chunked message a receiver accepts (default 1 GiB). */
  maxMessageBytes?: number;
  /** Bytes of messages held while disconnected before sends fail (default 64 MiB). */
  maxQueuedBytes?: number;
  /** Where problems that have no caller to reject go (default: console.warn). */
  onError?: (err: Error) => void;
  /** Further nats.js options (auth, TLS, ...). */
  natsOptions?: Omit<NodeConnectionOptions, "servers">;
}

export type NatsStatusEvent =
  | { readonly type: "disconnect"; readonly server: string }
  | { readonly type: "reconnect"; readonly server: string }
  | { readonly type: "closed"; readonly error?: Error };

/** One NATS subject token: no whitespace, no dots (separators), no wildcards. */
const tokenRe = /^[^\s.*>]+$/u;

export function checkJobName(job: string): void {
  if (!tokenRe.test(job)) {
    throw new Error(`invalid job name "${job}": it must be one NATS subject token (no spaces, ".", "*" or ">")`);
  }
}

export function checkAddress(address: string): void {
  if (!address.split(".").every((t) => tokenRe.test(t))) {
    throw new Error(
      `invalid address "${address}": it must be non-empty tokens separated by single dots, with no spaces, "*" or ">"`,
    );
  }
}

const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
/** Messages this far below max_payload skip computing their headers' exact size. */
const HEADER_ROOM = 64 * 1024;
/** Room left in every chunk for the header values that vary between chunks. */
const CHUNK_HEADER_SLACK = 64;

interface PendingRequest {
  readonly corrId: string;
  readonly address: string;
  readonly subject: string;
  readonly bytes: Uint8Array;
  readonly headers: Headers;
  readonly retriable: boolean;
  /** queued: waits for a connection; sent: published on this connection; resend: published before a disconnect. */
  state: "queued" | "sent" | "resend";
  noResponderRetries: number;
  retryTimer?: NodeJS.Timeout;
  readonly timer: NodeJS.Timeout;
  readonly resolve: (r: Reply) => void;
  readonly reject: (err: Error) => void;
}

type Outgoing =
  | { readonly kind: "message"; readonly subject: string; readonly bytes: Uint8Array; readonly headers: Headers }
  | { readonly kind: "request"; readonly req: PendingRequest };

interface InboundMeta {
  readonly headers: Headers;
  readonly reply: string | undefined;
}

export class NatsTransport implements Transport {
  readonly kind = "nats" as const;
  readonly job: string;
  private readonly prefix: string;
  private readonly inbox: string;
  private readonly inboxSub: Subscription;
  private readonly pending = new Map<string, PendingRequest>();
  private readonly served = new Map<string, Subscription>();
  private readonly subjects = new Map<string, string>();
  private readonly reassembler: Reassembler<InboundMeta>;
  private readonly sweepTimer: NodeJS.Timeout;
  private readonly listeners = new Set<(e: NatsStatusEvent) => void>();
  private readonly retryOnReconnect: boolean;
  private readonly graceMs: number;
  private readonly maxQueuedBytes: number;
  private readonly report: (err: Error) => void;
  private outbox: Outgoing[] = [];
  private tells: Outgoing[] = [];
  private tellsScheduled = false;
  private queuedBytes = 0;
  private connected = true;
  private closed = false;
  private closing?: Promise<void>;
  private graceUntil = 0;
  private lastMaxPayload: number;

  static async connect(opts: NatsTransportOptions): Promise<NatsTransport> {
    checkJobName(opts.job);
    const nc = await connect({
      servers: opts.servers,
      name: opts.name ?? `tessera-${opts.job}`,
      reconnect: true,
      maxReconnectAttempts: opts.maxReconnectAttempts ?? -1,
      reconnectTimeWait: opts.reconnectTimeWaitMs ?? 250,
      reconnectJitter: 50,
      timeout: opts.connectTimeoutMs ?? 5000,
      pingInterval: opts.pingIntervalMs ?? 10_000,
      maxPingOut: 3,
      ...opts.natsOptions,
    });
    return new NatsTransport(nc, opts);
  }

  private constructor(
    private readonly nc: NatsConnection,
    opts: NatsTransportOptions,
  ) {
    this.job = opts.job;
    this.prefix = `tessera.${opts.job}.`;
    this.retryOnReconnect = opts.retryRequestsOnReconnect ?? true;
    this.graceMs = opts.noResponderGraceMs ?? 2000;
    this.maxQueuedBytes = opts.maxQueuedBytes ?? 64 * 1024 * 1024;
    this.report = opts.onError ?? ((err) => console.warn(`[tessera nats ${opts.job}] ${err.message}`));
    this.lastMaxPayload = nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;
    const reassemblyTimeoutMs = opts.reassemblyTimeoutMs ?? 30_000;
    this.reassembler = new Reassembler(reassemblyTimeoutMs, opts.maxMessageBytes ?? 1024 * 1024 * 1024);
    this.sweepTimer = setInterval(() => {
      const dropped = this.reassembler.sweep();
      if (dropped > 0) this.report(new Error(`dropped ${dropped} chunked message(s) whose remaining chunks never came`));
    }, Math.max(10, Math.min(reassemblyTimeoutMs / 2, 5000)));
    this.sweepTimer.unref();
    this.inbox = createInbox(opts.natsOptions?.inboxPrefix);
    this.inboxSub = nc.subscribe(`${this.inbox}.*`, {
      callback: (err, msg) => (err ? this.report(err) : this.onReplyMsg(msg)),
    });
    void this.watchStatus();
    void nc.closed().then((err) => this.onConnectionClosed(err ?? undefined));
  }

  /** The NATS subject an address maps to. Throws on an invalid address. */
  subjectFor(address: string): string {
    let subject = this.subjects.get(address);
    if (subject === undefined) {
      checkAddress(address);
      subject = this.prefix + address;
      // Bounded: addresses are a job's actors, but a caller could make up endless ones.
      if (this.subjects.size >= 10_000) this.subjects.clear();
      this.subjects.set(address, subject);
    }
    return subject;
  }

  /** Subscribes to connection events; returns the unsubscribe function. */
  onStatus(listener: (e: NatsStatusEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get isConnected(): boolean {
    return this.connected && !this.closed;
  }

  /** The `max_payload` of the server last connected to: messages above it are chunked. */
  get maxPayload(): number {
    return this.lastMaxPayload;
  }

  /** Chunked messages waiting for more chunks (for tests and diagnostics). */
  get pendingReassemblies(): number {
    return this.reassembler.size;
  }

  async serve(address: string, onDelivery: (d: Delivery) => void): Promise<Served> {
    this.assertOpen();
    const subject = this.subjectFor(address);
    // One server per address per transport, as in-process: two would both get every message.
    if (this.served.has(address)) throw new Error(`address "${address}" is already served`);
    const sub = this.nc.subscribe(subject, {
      callback: (err, msg) => (err ? this.report(err) : this.onServedMsg(address, msg, onDelivery)),
    });
    this.served.set(address, sub);
    // Once the server has the subscription, a request from anywhere reaches it.
    await this.flushQuietly();
    return {
      close: async () => {
        if (this.served.get(address) !== sub) return;
        this.served.delete(address);
        sub.unsubscribe();
        await this.flushQuietly();
      },
    };
  }

  async send(address: string, body: unknown, headers: Headers): Promise<void> {
    this.assertOpen();
    const out: Outgoing = { kind: "message", subject: this.subjectFor(address), bytes: encode(body), headers };
    if (!this.connected) {
      this.transmit(out);
      return;
    }
    // Tells wait for the end of this event-loop turn and go out together: nats.js writes to
    // the socket once per turn of the microtask queue, so a caller awaiting each tell would
    // otherwise pay a socket write per message. Requests and replies publish at once, after
    // whatever tells are waiting (transmit flushes them first), so FIFO per sender holds.
    this.tells.push(out);
    if (!this.tellsScheduled) {
      this.tellsScheduled = true;
      setImmediate(() => this.flushTells());
    }
  }

  request(address: string, body: unknown, headers: Headers, timeoutMs: number): Promise<Reply> {
    let subject: string;
    let bytes: Uint8Array;
    try {
      this.assertOpen();
      subject = this.subjectFor(address);
      bytes = encode(body);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<Reply>((resolve, reject) => {
      const corrId = nuid.next();
      const req: PendingRequest = {
        corrId,
        address,
        subject,
        bytes,
        headers,
        retriable: this.retryOnReconnect && typeof headers[H.id] === "string",
        state: "queued",
        noResponderRetries: 0,
        timer: setTimeout(
          () => this.settle(req, new AskTimeoutError(`no reply from "${address}" within ${timeoutMs} ms`)),
          timeoutMs,
        ),
        resolve,
        reject,
      };
      this.pending.set(corrId, req);
      this.transmit({ kind: "request", req });
    });
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    const wasOpen = !this.closed;
    if (wasOpen) this.flushTells();
    this.markClosed(new TransportClosedError(`NATS transport of job "${this.job}" closed`));
    for (const sub of this.served.values()) sub.unsubscribe();
    this.served.clear();
    this.inboxSub.unsubscribe();
    if (wasOpen && this.connected) await this.flushQuietly(1000);
    await this.nc.close();
    if (wasOpen) this.emit({ type: "closed" });
  }

  private markClosed(err: Error): void {
    this.closed = true;
    clearInterval(this.sweepTimer);
    for (const req of [...this.pending.values()]) this.settle(req, err);
    this.outbox = [];
    this.queuedBytes = 0;
    this.reassembler.clear();
  }

  private assertOpen(): void {
    if (this.closed) throw new TransportClosedError(`NATS transport of job "${this.job}" is closed`);
  }

  private flushTells(): void {
    this.tellsScheduled = false;
    const tells = this.tells;
    if (tells.length === 0) return;
    this.tells = [];
    for (const out of tells) {
      try {
        this.transmit(out);
      } catch (err) {
        this.report(err as Error);
      }
    }
  }

  /** Publishes now when connected; queues while disconnected (see the header comment). */
  private transmit(out: Outgoing): void {
    if (this.tells.length > 0) this.flushTells();
    if (this.connected) {
      this.publishOutgoing(out);
      return;
    }
    const bytes = out.kind === "message" ? out.bytes.byteLength : out.req.bytes.byteLength;
    if (this.queuedBytes + bytes > this.maxQueuedBytes) {
      const err = new DisconnectedError(
        `disconnected from NATS and ${this.queuedBytes} bytes are already queued (limit ${this.maxQueuedBytes})`,
      );
      if (out.kind === "request") this.settle(out.req, err);
      else throw err;
      return;
    }
    this.queuedBytes += bytes;
    this.outbox.push(out);
  }

  private publishOutgoing(out: Outgoing): void {
    if (out.kind === "message") {
      this.publish(out.subject, out.bytes, out.headers, undefined);
      return;
    }
    const req = out.req;
    if (!this.pending.has(req.corrId)) return;
    try {
      this.publish(req.subject, req.bytes, req.headers, `${this.inbox}.${req.corrId}`);
      req.state = "sent";
    } catch (err) {
      this.settle(req, err as Error);
    }
  }

  /** One NATS message, or chunks when it exceeds max_payload. Only chunk 0 carries the caller's headers and reply subject. */
  private publish(subject: string, bytes: Uint8Array, headers: Headers, reply: string | undefined): void {
    const maxPayload = this.lastMaxPayload;
    // Headers are small next to max_payload; their exact size only matters for messages near it.
    const nearLimit = bytes.byteLength + HEADER_ROOM > maxPayload;
    if (!nearLimit || bytes.byteLength + encodedHeaderBytes(headers) <= maxPayload) {
      this.nc.publish(subject, bytes, { headers: toNatsHeaders(headers), reply });
      return;
    }
    const id = nuid.next();
    const first = { ...headers, [CHUNK_HEADER]: formatChunkHeader({ id, index: 0, count: 1, totalBytes: bytes.byteLength }) };
    const chunkBytes = maxPayload - encodedHeaderBytes(first) - CHUNK_HEADER_SLACK;
    if (chunkBytes < 1024) {
      throw new Error(`headers of a message to "${subject}" leave no room for data under max_payload ${maxPayload}`);
    }
    const parts = splitBytes(bytes, chunkBytes);
    parts.forEach((part, index) => {
      const h = (index === 0 ? toNatsHeaders(headers) : undefined) ?? natsHeaders();
      h.set(CHUNK_HEADER, formatChunkHeader({ id, index, count: parts.length, totalBytes: bytes.byteLength }));
      this.nc.publish(subject, part, { headers: h, reply: index === 0 ? reply : undefined });
    });
  }

  private onServedMsg(address: string, msg: Msg, onDelivery: (d: Delivery) => void): void {
    const chunk = msg.headers?.get(CHUNK_HEADER);
    if (!chunk) {
      this.deliver(address, () => decode(msg.data), fromNatsHeaders(msg.headers), msg.reply || undefined, onDelivery);
      return;
    }
    const info = parseChunkHeader(chunk);
    if (!info) {
      const err = new CodecError(`malformed ${CHUNK_HEADER} header "${chunk}"`);
      this.deliver(address, () => { throw err; }, fromNatsHeaders(msg.headers), msg.reply || undefined, onDelivery);
      return;
    }
    const out = this.reassembler.add(info, msg.data, () => ({
      headers: fromNatsHeaders(msg.headers),
      reply: msg.reply || undefined,
    }));
    if (out.kind === "complete") {
      const bytes = out.bytes;
      this.deliver(address, () => decode(bytes), out.meta.headers, out.meta.reply, onDelivery);
    } else if (out.kind === "dropped") {
      this.report(new Error(`message to "${address}" dropped: ${out.reason}`));
    }
  }

  private deliver(
    address: string,
    decodeBody: () => unknown,
    headers: Headers,
    replySubject: string | undefined,
    onDelivery: (d: Delivery) => void,
  ): void {
    let decoded: { ok: true; value: unknown } | { ok: false; err: unknown } | undefined;
    const body = () => {
      if (!decoded) {
        try {
          decoded = { ok: true, value: decodeBody() };
        } catch (err) {
          decoded = { ok: false, err };
        }
      }
      if (decoded.ok) return decoded.value;
      throw decoded.err;
    };
    const reply = replySubject === undefined ? undefined : this.replier(replySubject);
    const d: Delivery = reply ? { address, headers, body, reply } : { address, headers, body };
    try {
      onDelivery(d);
    } catch (err) {
      this.report(new Error(`handler of "${address}" threw: ${(err as Error).message}`));
    }
  }

  private replier(subject: string): (body: unknown, headers?: Headers) => void {
    let used = false;
    return (body, headers = {}) => {
      if (used) return;
      const bytes = encode(body);
      used = true;
      // The asker is gone with the transport; nobody is left to tell.
      if (this.closed) return;
      try {
        this.transmit({ kind: "message", subject, bytes, headers });
      } catch (err) {
        this.report(err as Error);
      }
    };
  }

  private onReplyMsg(msg: Msg): void {
    const corrId = msg.subject.slice(this.inbox.length + 1);
    if (msg.headers?.code === 503 && msg.data.byteLength === 0) {
      this.onNoResponders(corrId);
      return;
    }
    const chunk = msg.headers?.get(CHUNK_HEADER);
    if (!chunk) {
      this.onReply(corrId, msg.data, fromNatsHeaders(msg.headers));
      return;
    }
    const info = parseChunkHeader(chunk);
    const out = info
      ? this.reassembler.add(info, msg.data, () => ({ headers: fromNatsHeaders(msg.headers), reply: undefined }))
      : ({ kind: "dropped", reason: `malformed ${CHUNK_HEADER} header "${chunk}"` } as const);
    if (out.kind === "complete") this.onReply(corrId, out.bytes, out.meta.headers);
    else if (out.kind === "dropped") this.report(new Error(`reply dropped: ${out.reason}`));
  }

  private onReply(corrId: string, bytes: Uint8Array, headers: Headers): void {
    // No entry: a late reply (the ask timed out) or the second reply to a retried request.
    const req = this.pending.get(corrId);
    if (!req) return;
    let body: unknown;
    try {
      body = decode(bytes);
    } catch (err) {
      this.settle(req, err as Error);
      return;
    }
    this.settle(req, undefined, { body, headers });
  }

  private onNoResponders(corrId: string): void {
    const req = this.pending.get(corrId);
    if (!req || req.retryTimer) return;
    if (Date.now() >= this.graceUntil) {
      this.settle(req, new NoResponderError(`no one serves "${req.address}" in job "${this.job}"`));
      return;
    }
    const delay = Math.min(50 * 2 ** req.noResponderRetries, 500);
    req.noResponderRetries += 1;
    req.retryTimer = setTimeout(() => {
      req.retryTimer = undefined;
      if (this.pending.has(corrId)) this.transmit({ kind: "request", req });
    }, delay);
  }

  private settle(req: PendingRequest, err: Error | undefined, reply?: Reply): void {
    if (!this.pending.delete(req.corrId)) return;
    clearTimeout(req.timer);
    clearTimeout(req.retryTimer);
    if (err) req.reject(err);
    else req.resolve(reply as Reply);
  }

  private async watchStatus(): Promise<void> {
    for await (const s of this.nc.status()) {
      if (this.closed) return;
      if (s.type === "disconnect") this.onDisconnect(s.server);
      else if (s.type === "reconnect") this.onReconnect(s.server);
    }
  }

  private onDisconnect(server: string): void {
    if (!this.connected) return;
    this.connected = false;
    for (const req of [...this.pending.values()]) {
      if (req.state !== "sent") continue;
      if (req.retriable) req.state = "resend";
      else this.settle(req, new DisconnectedError(`connection to NATS lost with an ask to "${req.address}" in flight`));
    }
    this.emit({ type: "disconnect", server });
  }

  private onReconnect(server: string): void {
    this.connected = true;
    this.lastMaxPayload = this.nc.info?.max_payload ?? this.lastMaxPayload;
    this.graceUntil = Date.now() + this.graceMs;
    // Oldest first: requests that were out before the disconnect, then what queued since.
    for (const req of [...this.pending.values()]) {
      if (req.state === "resend") this.publishOutgoing({ kind: "request", req });
    }
    const outbox = this.outbox;
    this.outbox = [];
    this.queuedBytes = 0;
    for (const out of outbox) {
      try {
        this.publishOutgoing(out);
      } catch (err) {
        this.report(err as Error);
      }
    }
    this.emit({ type: "reconnect", server });
  }

  private onConnectionClosed(err: Error | undefined): void {
    if (this.closed) return;
    // nats.js gave up (reconnect attempts exhausted) or the server refused us for good.
    this.markClosed(new TransportClosedError(`NATS connection closed${err ? `: ${err.message}` : ""}`));
    this.emit({ type: "closed", ...(err ? { error: err } : {}) });
  }

  private emit(e: NatsStatusEvent): void {
    for (const l of this.listeners) {
      try {
        l(e);
      } catch (err) {
        this.report(err as Error);
      }
    }
  }

  /** Waits until the server has processed what was sent, within a bound: never hangs a caller on a dead link. */
  private async flushQuietly(ms = 5000): Promise<void> {
    if (!this.connected || this.nc.isClosed()) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.nc.flush().catch(() => undefined),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, ms);
      }),
    ]);
    clearTimeout(timer);
  }
}

function toNatsHeaders(h: Headers): MsgHdrs | undefined {
  const keys = Object.keys(h);
  if (keys.length === 0) return undefined;
  const out = natsHeaders();
  for (const k of keys) out.set(k, h[k] as string);
  return out;
}

/** Size of headers in the NATS wire format (`NATS/1.0\r\nk: v\r\n...\r\n`), which counts against max_payload. */
function encodedHeaderBytes(h: Headers): number {
  let n = 0;
  for (const [k, v] of Object.entries(h)) n += Buffer.byteLength(k) + Buffer.byteLength(v) + 4;
  return n === 0 ? 0 : n + 12;
}

function fromNatsHeaders(h: MsgHdrs | undefined): Headers {
  const out: Headers = {};
  if (!h) return out;
  for (const [k, values] of h) {
    if (k !== CHUNK_HEADER && values[0] !== undefined) out[k] = values[0];
  }
  return out;
}
