// Typed errors of the runtime. Each carries a stable `code` so that errors that cross a
// process boundary (as reply payloads) can be rebuilt as the same class on the other side.

export type RuntimeErrorCode =
  | "ASK_TIMEOUT"
  | "NO_RESPONDER"
  | "INVALID_MESSAGE"
  | "CODEC"
  | "HANDLER_FAILED"
  | "TRANSPORT_CLOSED"
  | "ACTOR_STOPPED"
  | "DISCONNECTED";

export class RuntimeError extends Error {
  constructor(
    readonly code: RuntimeErrorCode,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** An ask got no reply within its timeout. */
export class AskTimeoutError extends RuntimeError {
  constructor(message: string) {
    super("ASK_TIMEOUT", message);
  }
}

/** Nobody serves the address an ask was sent to. */
export class NoResponderError extends RuntimeError {
  constructor(message: string) {
    super("NO_RESPONDER", message);
  }
}

/** A message failed its protocol's schema; the message names what was wrong. */
export class InvalidMessageError extends RuntimeError {
  constructor(message: string) {
    super("INVALID_MESSAGE", message);
  }
}

/** Bytes that are not a message. */
export class CodecError extends RuntimeError {
  constructor(message: string) {
    super("CODEC", message);
  }
}

/** The remote handler threw; its message is carried back. */
export class HandlerError extends RuntimeError {
  constructor(message: string) {
    super("HANDLER_FAILED", message);
  }
}

/** The transport was closed (or the connection lost for good) with the message in flight. */
export class TransportClosedError extends RuntimeError {
  constructor(message: string) {
    super("TRANSPORT_CLOSED", message);
  }
}

/** The target actor stopped before it handled the message. */
export class ActorStoppedError extends RuntimeError {
  constructor(message: string) {
    super("ACTOR_STOPPED", message);
  }
}

/** The connection dropped while the ask was in flight and its reply cannot be trusted to come. */
export class DisconnectedError extends RuntimeError {
  constructor(message: string) {
    super("DISCONNECTED", message);
  }
}

const byCode: Record<RuntimeErrorCode, new (message: string) => RuntimeError> = {
  ASK_TIMEOUT: AskTimeoutError,
  NO_RESPONDER: NoResponderError,
  INVALID_MESSAGE: InvalidMessageError,
  CODEC: CodecError,
  HANDLER_FAILED: HandlerError,
  TRANSPORT_CLOSED: TransportClosedError,
  ACTOR_STOPPED: ActorStoppedError,
  DISCONNECTED: DisconnectedError,
};

/** The plain form of an error that crosses a transport. */
export interface WireError {
  code: RuntimeErrorCode;
  message: string;
}

export function toWireError(err: unknown): WireError {
  if (err instanceof RuntimeError) return { code: err.code, message: err.message };
  return { code: "HANDLER_FAILED", message: err instanceof Error ? err.message : String(err) };
}

export function fromWireError(w: WireError): RuntimeError {
  const Cls = byCode[w.code] ?? HandlerError;
  return new Cls(w.message);
}
