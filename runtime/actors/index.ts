/**
 * Actors: the control plane of Tessera.
 *
 *   const Counter = defineProtocol("counter", { add: { msg: z.object({ n: z.number() }), reply: z.number() } });
 *   const counter = defineActor(Counter, (ctx) => {
 *     let total = 0; // state lives in the closure: a restart calls this again, from scratch
 *     return { add: (m) => (total += m.n) };
 *   });
 *   const system = new ActorSystem({ transport: new InProcTransport(), name: "main" });
 *   const ref = await system.spawn("counter", counter);
 *   await ref.ask({ type: "add", n: 2 }); // 2, typed number
 *   // from another process on the same NATS job: system.ref("counter", Counter).ask(...)
 *
 * Protocols. An actor serves one protocol, declared with zod: `defineProtocol("counter",
 * { add: { msg: z.object({ n: z.number() }), reply: z.number() } })`. On the wire a message is
 * one object discriminated by `type` (`{ type: "add", n: 1 }`). Every inbound message is
 * validated before a handler sees it; bytes that do not decode (CodecError) or a message that
 * fails its schema (InvalidMessageError) are answered with that error when the sender asked,
 * and logged and counted (`system.stats(address).invalid`, event `messageError`) when it told.
 * The actor serves on either way.
 *
 * Mailbox. An actor handles one message at a time, in arrival order; the transport keeps each
 * sender's messages in order, so messages from one sender are handled in the order sent.
 * `ref.tell(msg)` is fire-and-forget: never use it where losing the message would lose work.
 * `ref.ask(msg, { timeoutMs })` resolves with the handler's return value, or rejects with a
 * typed error (runtime/errors.ts): AskTimeoutError, NoResponderError (nobody serves the
 * address), InvalidMessageError / CodecError, ActorStoppedError, or HandlerError carrying
 * the message of what the handler threw. Replies travel as `{ ok: true, value }` or
 * `{ ok: false, error: WireError }` and are rebuilt into the error class on the asking side.
 * A handler that asks its own actor (directly or round a cycle) waits on itself: that ask
 * can only time out. Values are handed over as they are in-process: treat bodies as borrowed.
 *
 * Ids and dedupe. Every message carries an id header (`H.id`, a fresh UUID unless the
 * caller passes `{ id }` to retry an earlier attempt). An actor remembers the outcome of the
 * last 10 000 ids it accepted (bounded LRU, `dedupeCapacity`): a duplicate is answered with
 * that outcome, also if the first is still queued or running, and its handler does not run
 * again. So a command retried after a reconnect runs once. A message that was still queued
 * when its actor stopped is forgotten (it never ran), so a retry elsewhere can run it.
 * Remembered replies stay in memory: an actor whose replies are large (tensors, batches)
 * should get a small `dedupeCapacity`, or reply with a handle rather than the data.
 *
 * Supervision. `system.spawn(address, def, { parent, supervision })` or `ctx.spawn(...)` in
 * an actor makes a child. A handler that throws is NOT a failure: it fails that message only.
 * A failure is a start that throws (on restart; a first start that throws rejects the spawn),
 * a `ctx.fail(err)`, or, for child processes (process.ts), the process exiting or missing its
 * heartbeats. The parent's policy for the child picks: `restart` (stop its children, run its
 * `onStop` cleanups, call `start` again with fresh state; its mailbox keeps waiting messages),
 * `stop`, or `escalate` (stop the child and fail the parent). More than `maxRestarts` restarts
 * within `withinMs` escalates. A failure escalated past a root actor stops it and emits
 * `escalated` on the system. Events `failed`, `restarted`, `stopped` make all of it visible.
 * A restart cannot cancel a handler that is still running; the new incarnation takes the
 * next message once that handler settles, so handlers still never overlap.
 *
 * Heartbeats and processes. A process (or any remote system) tells heartbeats to the address
 * of its supervisor's HeartbeatMonitor; silence longer than `deadAfterMs` (default 3 s, beats
 * every 500 ms) declares it dead. ProcessSupervisor spawns child OS processes (`node --import
 * tsx script`; the script calls `startChildHeartbeats(system)` once its actors serve), watches
 * their exits and heartbeats, kills what is left of a dead one, and applies the same policies;
 * its children emit `dead` (reason, time since the last beat) and `restarted`. Inside an
 * actor, `superviseProcesses(ctx, address)` makes an escalation fail that actor and its stop
 * kill the processes. `system.shutdown()` stops supervised processes too.
 *
 * Telemetry. Each handled message runs in a span `actor <address> <type>`, child of the trace
 * context carried in the message's headers; every tell/ask injects the active context, so a
 * trace follows a command across actors and processes.
 *
 * Transports. The system encodes nothing; any Transport (in-process, NATS) carries it.
 */
export { defineProtocol } from "./protocol.ts";
export type { MessageOf, MessageSpec, MessageType, Protocol, ProtocolSpec, ReplyOf } from "./protocol.ts";
export { ActorRef, ActorSystem, defineActor, EscalatedFailure } from "./system.ts";
export type {
  ActorContext,
  ActorDefinition,
  ActorStats,
  ActorSystemEvents,
  ActorSystemOptions,
  AskOptions,
  Handlers,
  Logger,
  MessageMeta,
  Outgoing,
  SendOptions,
  StopReason,
} from "./system.ts";
export type { Directive, SupervisionPolicy } from "./supervision.ts";
export type { ReplyEnvelope } from "./reply.ts";
export { defaultHeartbeat, HeartbeatMonitor, HeartbeatProtocol, startHeartbeats } from "./heartbeat.ts";
export type { DeathReason, HeartbeatSpec, HeartbeatTiming, Silence, Watch, WatchOptions } from "./heartbeat.ts";
export {
  ProcessDeadError,
  ProcessSupervisor,
  startChildHeartbeats,
  SupervisedProcess,
  superviseProcesses,
  supervisedChildEnv,
} from "./process.ts";
export type {
  ChildProcessSpec,
  ProcessDeath,
  ProcessDeathReason,
  ProcessSupervisorOptions,
  SupervisedChildEnv,
  SupervisedProcessEvents,
} from "./process.ts";
