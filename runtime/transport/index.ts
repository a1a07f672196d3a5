// The public face of runtime/transport: the interface every transport implements, the
// in-process transport, and the NATS transport.
export type { Transport, Delivery, Reply, Served, Headers } from "./types.ts";
export { H } from "./types.ts";
export { InProcTransport } from "./inproc.ts";
export { NatsTransport, checkAddress, checkJobName } from "./nats.ts";
export type { NatsTransportOptions, NatsStatusEvent } from "./nats.ts";
