// The actor system of one process: its actors' mailboxes, supervision tree and refs, over one
// Transport. See index.ts for the model as users see it.
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { SpanStatusCode } from "@opentelemetry/api";
import type { z } from "zod";
import { ActorStoppedError } from "../errors.ts";
import { injectTraceContext, withMessageSpan } from "../telemetry/propagation.ts";
import { H, type Delivery, type Headers, type Served, type Transport } from "../transport/types.ts";
import { OutcomeCache } from "./dedupe.ts";
import type { MessageOf, MessageType, Named, Protocol, ProtocolSpec, ReplyOf } from "./protocol.ts";
import { errorReply, okReply, openReply, type ReplyEnvelope } from "./reply.ts";
import { defaultPolicy, RestartBudget, type Directive, type SupervisionPolicy } from "./supervision.ts";

export interface MessageMeta {
  /** The message id (`H.id`): stable across retries of the same command. */
  readonly id: string | undefined;
  /** The sender's address, or its system's name when the sender is not an actor. */
  readonly from: string | undefined;
  /** True for an ask (the sender waits for the reply), false for a tell. */
  readonly asked: boolean;
  readonly headers: Headers;
}

export type Handlers<S extends ProtocolSpec> = {
  [K in MessageType<S>]: (msg: MessageOf<S, K>, meta: MessageMeta) => ReplyOf<S, K> | Promise<ReplyOf<S, K>>;
};

export interface ActorContext {
  /** This actor's address. */
  readonly self: string;
  readonly system: ActorSystem;
  /** 0 for the first start, one more for each restart. */
  readonly incarnation: number;
  /**
   * Declares this actor failed: its parent's policy decides (restart, stop, escalate). For
   * failures outside a handler's reply (a broken background loop, a lost resource); a
   * handler that throws only fails that one message.
   */
  fail(error: unknown): void;
  /** Spawns a child that this actor supervises. */
  spawn<S extends ProtocolSpec>(address: string, def: ActorDefinition<S>, opts?: { supervision?: SupervisionPolicy }): Promise<ActorRef<S>>;
  /** A ref whose messages carry this actor as their sender. */
  ref<S extends ProtocolSpec>(address: string, protocol: Protocol<S>): ActorRef<S>;
  /** Runs `fn` when this incarnation ends (stop, or before a restart), children already stopped. */
  onStop(fn: () => void | Promise<void>): void;
}

export interface ActorDefinition<S extends ProtocolSpec> {
  readonly protocol: Protocol<S>;
  /**
   * Starts one incarnation and returns its handlers; state lives in their closure, so a
   * restart (which calls `start` again) begins from fresh state. A throw is a failure.
   */
  readonly start: (ctx: ActorContext) => Handlers<S> | Promise<Handlers<S>>;
}

export function defineActor<S extends ProtocolSpec>(
  protocol: Protocol<S>,
  start: (ctx: ActorContext) => Handlers<S> | Promise<Handlers<S>>,
): ActorDefinition<S> {
  return { protocol, start };
}

/** A message of type K as a sender writes it (K inferred from `type`). */
export type Outgoing<S extends ProtocolSpec, K extends MessageType<S>> = { type: K } & Named<z.input<S[K]["msg"]>>;

export interface SendOptions {
  /** Reuse the id of an earlier attempt to retry it idempotently. Default: a fresh UUID. */
  id?: string;
}

export interface AskOptions extends SendOptions {
  timeoutMs?: number;
}

/** A handle to an address on the system's transport; the actor may live in any process. */
export class ActorRef<S extends ProtocolSpec> {
  constructor(
    private readonly system: ActorSystem,
    readonly address: string,
    readonly protocol: Protocol<S>,
    private readonly from: string,
  ) {}

  /** Fire-and-forget; resolves once the transport took the message. */
  tell<K extends MessageType<S>>(msg: Outgoing<S, K>, opts: SendOptions = {}): Promise<void> {
    return this.system.transport.send(this.address, msg, this.headers(msg.type, opts.id));
  }

  /** Rejects with AskTimeoutError, NoResponderError, or the typed error the actor replied with. */
  async ask<K extends MessageType<S>>(msg: Outgoing<S, K>, opts: AskOptions = {}): Promise<ReplyOf<S, K>> {
    const timeoutMs = opts.timeoutMs ?? this.system.askTimeoutMs;
    const reply = await this.system.transport.request(this.address, msg, this.headers(msg.type, opts.id), timeoutMs);
    return this.protocol.parseReply(msg.type, openReply(reply.body, this.address));
  }

  private headers(type: string, id: string | undefined): Headers {
    return injectTraceContext({ [H.id]: id ?? randomUUID(), [H.type]: type, [H.from]: this.from });
  }
}

export interface ActorStats {
  /** Messages whose handler ran (and returned or threw). */
  handled: number;
  /** Messages rejected before a handler: undecodable bytes or a failed schema. */
  invalid: number;
  /** Handler runs that threw. */
  handlerErrors: number;
  /** Messages answered from the dedupe cache without running a handler. */
  duplicates: number;
}

export interface ActorSystemEvents {
  failed: [{ address: string; error: unknown; directive: Directive }];
  restarted: [{ address: string; incarnation: number }];
  stopped: [{ address: string; reason: StopReason }];
  /** A failure escalated past the root of the supervision tree: nobody above to decide. */
  escalated: [{ address: string; error: unknown }];
  /** An invalid message or a handler throw; `told` when there was no asker to tell. */
  messageError: [{ address: string; type: string; error: unknown; told: boolean }];
}

export type StopReason = "requested" | "failed" | "escalated" | "shutdown" | "parent";

export type LogLevel = "warn" | "error";
export type Logger = (level: LogLevel, message: string, fields?: Record<string, unknown>) => void;

const consoleLogger: Logger = (level, message, fields) => console[level](`[tessera] ${message}`, fields ?? "");

export interface ActorSystemOptions {
  transport: Transport;
  /** This process's name; the sender of messages from outside any actor. */
  name: string;
  /** Default ask timeout (10 s). */
  askTimeoutMs?: number;
  /** Message ids remembered per actor for dedupe (10 000). */
  dedupeCapacity?: number;
  log?: Logger;
}

export class ActorSystem extends EventEmitter<ActorSystemEvents> {
  readonly transport: Transport;
  readonly name: string;
  readonly askTimeoutMs: number;
  readonly dedupeCapacity: number;
  readonly log: Logger;
  private readonly cells = new Map<string, Cell>();
  private readonly shutdownHooks = new Set<() => void | Promise<void>>();
  private closed = false;

  constructor(opts: ActorSystemOptions) {
    super();
    this.transport = opts.transport;
    this.name = opts.name;
    this.askTimeoutMs = opts.askTimeoutMs ?? 10_000;
    this.dedupeCapacity = opts.dedupeCapacity ?? 10_000;
    this.log = opts.log ?? consoleLogger;
  }

  /**
   * Starts an actor at `address` and serves it on the transport. Rejects (and leaves nothing
   * behind) when its first start throws; later starts are restarts, under supervision.
   */
  async spawn<S extends ProtocolSpec>(
    address: string,
    def: ActorDefinition<S>,
    opts: { parent?: string | { readonly address: string }; supervision?: SupervisionPolicy } = {},
  ): Promise<ActorRef<S>> {
    if (this.closed) throw new ActorStoppedError(`actor system "${this.name}" is shut down`);
    if (this.cells.has(address)) throw new Error(`actor "${address}" already exists`);
    const parentAddress = typeof opts.parent === "string" ? opts.parent : opts.parent?.address;
    const parent = parentAddress === undefined ? undefined : this.cells.get(parentAddress);
    if (parentAddress !== undefined && !parent) throw new Error(`parent "${parentAddress}" is not an actor of this system`);

    const cell = new Cell(this, address, def as unknown as ActorDefinition<ProtocolSpec>, parent, opts.supervision ?? defaultPolicy);
    this.cells.set(address, cell);
    parent?.children.add(cell);
    try {
      await cell.serve();
      await cell.startIncarnation();
    } catch (err) {
      await cell.discard();
      throw err;
    }
    return this.ref(address, def.protocol);
  }

  /** A ref to `address` on this system's transport; the actor may live in another process. */
  ref<S extends ProtocolSpec>(address: string, protocol: Protocol<S>, from = this.name): ActorRef<S> {
    return new ActorRef(this, address, protocol, from);
  }

  /** Stops a local actor and its children; queued asks get ActorStoppedError. */
  async stop(address: string): Promise<void> {
    await this.cells.get(address)?.stop("requested");
  }

  /**
   * Runs `fn` at shutdown, before the actors stop (for what lives beside the actors: child
   * processes, timers). Returns the function that unregisters it.
   */
  onShutdown(fn: () => void | Promise<void>): () => void {
    this.shutdownHooks.add(fn);
    return () => this.shutdownHooks.delete(fn);
  }

  /** Stops every actor (children before parents). The transport stays open: its owner closes it. */
  async shutdown(): Promise<void> {
    this.closed = true;
    const hooks = [...this.shutdownHooks];
    this.shutdownHooks.clear();
    await Promise.all(
      hooks.map(async (fn) => {
        try {
          await fn();
        } catch (err) {
          this.log("warn", "a shutdown hook threw", { error: String(err) });
        }
      }),
    );
    const roots = [...this.cells.values()].filter((c) => !c.parent);
    await Promise.all(roots.map((c) => c.stop("shutdown")));
  }

  /** Counters of a local actor (a copy), or undefined if it is not running here. */
  stats(address: string): ActorStats | undefined {
    const c = this.cells.get(address);
    return c ? { ...c.stats } : undefined;
  }

  /** Addresses of the local actors. */
  addresses(): string[] {
    return [...this.cells.keys()];
  }

  /** @internal */
  forget(cell: Cell): void {
    if (this.cells.get(cell.address) === cell) this.cells.delete(cell.address);
  }
}

/** Error given to a parent when a child escalates. */
export class EscalatedFailure extends Error {
  constructor(
    readonly child: string,
    readonly reason: unknown,
  ) {
    super(`child "${child}" failed: ${reason instanceof Error ? reason.message : String(reason)}`, { cause: reason });
    this.name = "EscalatedFailure";
  }
}

type Status = "starting" | "running" | "failed" | "stopped";

interface Pending {
  readonly d: Delivery;
  readonly id: string | undefined;
  readonly settle: (r: ReplyEnvelope) => void;
}

/** One actor: mailbox, current incarnation, children and supervision bookkeeping. */
class Cell {
  status: Status = "starting";
  incarnation = 0;
  readonly children = new Set<Cell>();
  readonly stats: ActorStats = { handled: 0, invalid: 0, handlerErrors: 0, duplicates: 0 };
  private handlers: Record<string, (msg: unknown, meta: MessageMeta) => unknown> | undefined;
  private readonly queue: Pending[] = [];
  private draining = false;
  private cleanups: (() => void | Promise<void>)[] = [];
  private served: Served | undefined;
  private readonly dedupe: OutcomeCache<ReplyEnvelope>;
  private readonly budget: RestartBudget;

  constructor(
    private readonly system: ActorSystem,
    readonly address: string,
    private readonly def: ActorDefinition<ProtocolSpec>,
    readonly parent: Cell | undefined,
    policy: SupervisionPolicy,
  ) {
    this.dedupe = new OutcomeCache(system.dedupeCapacity);
    this.budget = new RestartBudget(policy);
  }

  async serve(): Promise<void> {
    this.served = await this.system.transport.serve(this.address, (d) => this.accept(d));
  }

  async startIncarnation(): Promise<void> {
    const incarnation = this.incarnation;
    this.cleanups = [];
    const handlers = await this.def.start(this.context(incarnation));
    if (incarnation !== this.incarnation || this.status !== "starting") return;
    this.handlers = handlers as Record<string, (msg: unknown, meta: MessageMeta) => unknown>;
    this.status = "running";
    void this.drain();
  }

  /** Undoes a spawn whose first start failed. */
  async discard(): Promise<void> {
    await this.teardown();
  }

  fail(error: unknown, incarnation = this.incarnation): void {
    if (incarnation !== this.incarnation || this.status === "failed" || this.status === "stopped") return;
    this.status = "failed";
    const { directive, exhausted } = this.budget.decide(error);
    this.system.emit("failed", { address: this.address, error, directive });
    if (exhausted) this.system.log("warn", `actor "${this.address}" exceeded its restart budget; escalating`);
    void this.apply(directive, error).catch((err: unknown) =>
      this.system.log("error", `supervising "${this.address}" failed`, { error: String(err) }),
    );
  }

  async stop(reason: StopReason): Promise<void> {
    if (this.status === "stopped") return;
    await this.teardown();
    this.system.emit("stopped", { address: this.address, reason });
  }

  /** Stops children, runs cleanups, stops serving, fails what waits, and leaves the tree. */
  private async teardown(): Promise<void> {
    this.status = "stopped";
    await this.stopChildren("parent");
    await this.runCleanups();
    await this.served?.close();
    this.rejectQueued();
    this.parent?.children.delete(this);
    this.system.forget(this);
  }

  private async apply(directive: Directive, error: unknown): Promise<void> {
    if (directive === "restart") {
      await this.stopChildren("parent");
      await this.runCleanups();
      if (this.status !== "failed") return; // stopped meanwhile
      this.incarnation++;
      this.status = "starting";
      try {
        await this.startIncarnation();
      } catch (err) {
        this.fail(err);
        return;
      }
      // startIncarnation may have lost a race with a stop, or a fail inside `start`.
      if ((this.status as Status) === "running") this.system.emit("restarted", { address: this.address, incarnation: this.incarnation });
    } else if (directive === "stop") {
      await this.stop("failed");
    } else {
      await this.stop("escalated");
      if (this.parent) this.parent.fail(new EscalatedFailure(this.address, error));
      else if (this.system.listenerCount("escalated") > 0) this.system.emit("escalated", { address: this.address, error });
      else this.system.log("error", `actor "${this.address}" failed and nobody supervises it`, { error: String(error) });
    }
  }

  private accept(d: Delivery): void {
    if (this.status === "stopped") {
      d.reply?.(errorReply(new ActorStoppedError(`actor "${this.address}" is stopped`)));
      return;
    }
    const id = d.headers[H.id];
    const prior = id === undefined ? undefined : this.dedupe.get(id);
    if (prior) {
      this.stats.duplicates++;
      const reply = d.reply;
      if (reply) void prior.then((r) => reply(r));
      return;
    }
    let settle!: (r: ReplyEnvelope) => void;
    const outcome = new Promise<ReplyEnvelope>((resolve) => (settle = resolve));
    if (id !== undefined) this.dedupe.set(id, outcome);
    this.queue.push({ d, id, settle });
    void this.drain();
  }

  // One loop per actor; `draining` keeps a second from starting, which is what makes handlers
  // run one at a time. A restart does not cancel a handler still running: the new
  // incarnation takes the next message once it settles.
  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.status === "running" && this.queue.length > 0) {
        const p = this.queue.shift()!;
        const r = await this.handle(p.d);
        p.settle(r);
        p.d.reply?.(r);
      }
    } finally {
      this.draining = false;
    }
  }

  private handle(d: Delivery): Promise<ReplyEnvelope> {
    const type = d.headers[H.type] ?? "unknown";
    const attributes = {
      "tessera.actor": this.address,
      "tessera.message.type": type,
      "tessera.message.id": d.headers[H.id] ?? "",
      "tessera.actor.incarnation": this.incarnation,
    };
    return withMessageSpan(`actor ${this.address} ${type}`, d.headers, attributes, async (span) => {
      const reject = (err: unknown, counter: "invalid" | "handlerErrors"): ReplyEnvelope => {
        this.stats[counter]++;
        span.recordException(err as Error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
        this.reportMessageError(type, err, !d.reply);
        return errorReply(err);
      };
      let msg: MessageOf<ProtocolSpec>;
      try {
        msg = this.def.protocol.parseMessage(d.body());
      } catch (err) {
        return reject(err, "invalid");
      }
      const handler = this.handlers![msg.type]!;
      const meta: MessageMeta = { id: d.headers[H.id], from: d.headers[H.from], asked: !!d.reply, headers: d.headers };
      this.stats.handled++;
      try {
        return okReply(await handler(msg, meta));
      } catch (err) {
        return reject(err, "handlerErrors");
      }
    });
  }

  private reportMessageError(type: string, error: unknown, told: boolean): void {
    this.system.emit("messageError", { address: this.address, type, error, told });
    // An asker hears about its error in the reply; a teller cannot, so the log is where it shows.
    if (told) this.system.log("warn", `actor "${this.address}" dropped a "${type}" tell`, { error: String(error) });
  }

  private rejectQueued(): void {
    const r = errorReply(new ActorStoppedError(`actor "${this.address}" stopped before handling the message`));
    for (const p of this.queue.splice(0)) {
      // Not handled, so a retry must not be answered from the cache.
      if (p.id !== undefined) this.dedupe.delete(p.id);
      p.settle(r);
      p.d.reply?.(r);
    }
  }

  private async stopChildren(reason: StopReason): Promise<void> {
    await Promise.all([...this.children].map((c) => c.stop(reason)));
  }

  private async runCleanups(): Promise<void> {
    for (const fn of this.cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch (err) {
        this.system.log("warn", `cleanup of "${this.address}" threw`, { error: String(err) });
      }
    }
  }

  private context(incarnation: number): ActorContext {
    return {
      self: this.address,
      system: this.system,
      incarnation,
      fail: (error) => this.fail(error, incarnation),
      spawn: (address, def, opts = {}) => this.system.spawn(address, def, { ...opts, parent: this.address }),
      ref: (address, protocol) => this.system.ref(address, protocol, this.address),
      onStop: (fn) => {
        if (incarnation === this.incarnation) this.cleanups.push(fn);
      },
    };
  }
}
