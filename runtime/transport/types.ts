// The one interface every transport implements. A transport moves messages between
// addresses; it knows nothing of actors, schemas or supervision (runtime/actors does).
//
// Addresses are plain strings such as "coordinator" or "rank.3"; a transport namespaces
// them per job (NATS: subject `tessera.<job>.<address>`).
//
// Ordering: messages from one sender to one address arrive in the order they were sent.
// Payloads: in-process, the value itself is handed over (zero copies: the receiver must
// not assume it owns it); over a wire, values are encoded with runtime/codec and decoded
// lazily by `Delivery.body()`, so garbage bytes surface as a CodecError the receiver can
// answer, not as a crash in the transport.

export type Headers = Record<string, string>;

/** Header names the runtime uses. */
export const H = {
  /** Unique id of a message; a retried message keeps its id (receivers dedupe on it). */
  id: "tessera-id",
  /** Sender's address, for FIFO-per-sender bookkeeping and error reports. */
  from: "tessera-from",
  /** Message type name (the protocol's discriminant), for spans and errors. */
  type: "tessera-type",
  /** W3C trace context. */
  traceparent: "traceparent",
  tracestate: "tracestate",
} as const;

export interface Delivery {
  readonly address: string;
  readonly headers: Headers;
  /** The payload. Throws CodecError when the bytes that arrived are not a message. */
  body(): unknown;
  /** Present when the sender waits for an answer (ask). Call at most once. */
  readonly reply?: (body: unknown, headers?: Headers) => void;
}

export interface Reply {
  readonly body: unknown;
  readonly headers: Headers;
}

export interface Served {
  close(): Promise<void>;
}

export interface Transport {
  readonly kind: "inproc" | "nats";
  /** Deliver messages sent to `address` to `onDelivery`, one call per message, in arrival order. */
  serve(address: string, onDelivery: (d: Delivery) => void): Promise<Served>;
  /** Fire-and-forget. Rejects only when the transport cannot take the message (closed). */
  send(address: string, body: unknown, headers: Headers): Promise<void>;
  /**
   * Request/reply. Rejects with AskTimeoutError after `timeoutMs`, NoResponderError when no
   * one serves `address`, TransportClosedError when the transport closes first.
   */
  request(address: string, body: unknown, headers: Headers, timeoutMs: number): Promise<Reply>;
  close(): Promise<void>;
}
