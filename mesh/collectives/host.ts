// The host backend of the collectives: typed arrays over the runtime's transport (in-process
// or NATS). Each rank serves one endpoint at `rank.<r>.coll` (a raw transport address, not an
// actor: collectives need neither schemas per op nor a mailbox that handles one message at a
// time, and an actor's dedupe would hold megabytes of replies). Each block is an ask answered
// with a bare ack on delivery: a peer that does not serve its endpoint yet is retried until
// the deadline, so ranks need not start in lockstep. A block lost for good (a dead peer, a
// connection gone) surfaces as the collective's timeout, which fails the step, as the DESIGN
// wants of anything a rank cannot trust.
//
// Algorithms. All are "direct": every member sends each other member what it needs, and the
// reductions happen where a block is owned, in group order.
// - allReduce up to SMALL_ALLREDUCE_BYTES: every member sends its whole buffer to every other
//   and each reduces all of them in group order (one round, n(n-1) small messages).
// - larger allReduce: reduce-scatter (member i receives everyone's block i and reduces it in
//   group order), then all-gather of the reduced blocks. Every byte crosses the wire twice,
//   spread over all members, no root as a hot spot. Both paths give the same bits: the sum
//   order is the group order either way (see reduce.ts), and each block of the large path is
//   reduced once and copied to everyone, so every member holds identical bits.
// - reduceScatter, allGather, allToAll: one round of blocks; broadcast: the root sends to all;
//   barrier: an empty all-gather.
// Every member receives from every other member in the first round (broadcast aside), so each
// can tell which ranks are missing when the deadline passes.
import { SpanStatusCode } from "@opentelemetry/api";
import { randomUUID } from "node:crypto";
import { AskTimeoutError, H, InProcTransport, NoResponderError, tracer, type Delivery, type Served, type Transport } from "../../runtime/index.ts";
import {
  CollectiveAbortedError,
  CollectiveError,
  CollectiveMismatchError,
  CollectiveTimeoutError,
  type CollectiveErrorInfo,
} from "./errors.ts";
import { dtypeOf, like, reduceInOrder } from "./reduce.ts";
import type { CallOptions, CollectiveOp, Collectives, HostBuffer, ReduceOp } from "./types.ts";
import { collectivesAddress, EnvelopeSchema, type Envelope } from "./wire.ts";

/**
 * allReduce buffers up to this many bytes go in one round of whole buffers (latency over
 * bandwidth). Measured with 4 ranks (tests/bench/mesh-collectives.bench.ts): one round wins
 * below about 4 KiB in-process and 8-16 KiB over NATS on loopback, two rounds above.
 */
export const SMALL_ALLREDUCE_BYTES = 8 * 1024;

/** Sequence numbers whose signatures a group remembers, to catch a late mismatching message. */
const REMEMBERED_SIGS = 256;

export interface HostCollectivesOptions {
  transport: Transport;
  /** This process's global rank. */
  rank: number;
  /** Default deadline of every collective (default 60 s); calls may pass their own. */
  timeoutMs?: number;
  /** Where problems without a caller go: garbage messages, stray senders (default console.warn). */
  onError?: (err: Error) => void;
}

/**
 * One rank's collectives endpoint. `group(ranks, name)` gives the Collectives of a process
 * group; every member must use the same name for it (the name and the ranks identify the
 * group on the wire: `dp[0,4]`).
 */
export class HostCollectives {
  readonly rank: number;
  readonly transport: Transport;
  readonly defaultTimeoutMs: number;
  private readonly report: (err: Error) => void;
  private readonly groups = new Map<string, GroupState>();
  private served?: Served;
  private abortReason?: string;
  private readonly link: EndpointLink;

  /** Serves this rank's endpoint on the transport and returns it. */
  static async start(opts: HostCollectivesOptions): Promise<HostCollectives> {
    const c = new HostCollectives(opts);
    c.served = await opts.transport.serve(collectivesAddress(opts.rank), (d) => c.onDelivery(d));
    return c;
  }

  private constructor(opts: HostCollectivesOptions) {
    if (!Number.isInteger(opts.rank) || opts.rank < 0) throw new RangeError(`rank must be a non-negative integer, got ${opts.rank}`);
    this.rank = opts.rank;
    this.transport = opts.transport;
    this.defaultTimeoutMs = opts.timeoutMs ?? 60_000;
    this.report = opts.onError ?? ((err) => console.warn(`[tessera collectives rank ${opts.rank}] ${err.message}`));
    this.link = {
      rank: this.rank,
      defaultTimeoutMs: this.defaultTimeoutMs,
      refusal: () => this.abortReason,
      send: (to, env, call) => this.sendBlock(to, env, call),
      report: (err) => this.report(err),
    };
  }

  /** The collectives of the group `ranks` (sorted, distinct, containing this rank). Same name and ranks: same object. */
  group(ranks: readonly number[], name = ""): Collectives<HostBuffer> {
    for (let i = 0; i < ranks.length; i++) {
      const r = ranks[i]!;
      if (!Number.isInteger(r) || r < 0) throw new RangeError(`group ${name}: rank ${r} is not a non-negative integer`);
      if (i > 0 && r <= ranks[i - 1]!) throw new RangeError(`group ${name}[${ranks.join(",")}]: ranks must be sorted and distinct`);
    }
    if (name.includes("[") || /[\s]/u.test(name)) throw new RangeError(`group name "${name}" must not contain "[" or spaces`);
    const key = `${name}[${ranks.join(",")}]`;
    if (!ranks.includes(this.rank)) throw new RangeError(`group ${key} does not contain this rank (${this.rank})`);
    const state = this.stateOf(key);
    state.handle ??= new HostGroup(this.link, state, [...ranks]);
    return state.handle;
  }

  get aborted(): boolean {
    return this.abortReason !== undefined;
  }

  /**
   * Rejects every pending collective, and every later one, with CollectiveAbortedError. For
   * the coordinator before it restarts the ranks: after an abort the group sequences cannot be
   * trusted, so the endpoint is done; the restarted ranks make new ones.
   */
  abort(reason = "abort() called"): void {
    if (this.abortReason !== undefined) return;
    this.abortReason = reason;
    for (const state of this.groups.values()) {
      for (const call of state.active.values()) call.fail(new CollectiveAbortedError(call.info, reason));
      state.early.clear();
    }
  }

  /** Aborts what is pending and stops serving the endpoint's address. */
  async close(): Promise<void> {
    this.abort("collectives endpoint closed");
    await this.served?.close();
  }

  /**
   * Sends one block as an ask, so that a peer whose endpoint is not served yet (it is still
   * starting) is retried until the call's deadline instead of losing the message, and so that
   * a reconnect re-publishes it under the same id (the receiver drops a duplicate).
   */
  private sendBlock(to: number, env: Envelope, call: Call): void {
    // In-process the receiver gets the very object; it may read it after the sender's call has
    // settled and its caller has reused the buffer, so it gets its own copy. A wire encodes
    // (copies) on send anyway.
    const body = this.transport.kind === "inproc" ? { ...env, d: env.d.slice() } : env;
    const headers = { [H.id]: randomUUID() };
    const address = collectivesAddress(to);
    const attempt = (backoffMs: number) => {
      // Not stopped when this rank's call settles: it may have all it needs while a peer still
      // waits for this block.
      const left = call.deadline - Date.now();
      if (this.abortReason !== undefined || left <= 0) return;
      this.transport.request(address, body, headers, left).then(
        () => call.unreachable.delete(to),
        (err: unknown) => {
          if (this.abortReason !== undefined || err instanceof AskTimeoutError) return; // the call's own deadline reports it
          if (err instanceof NoResponderError) {
            call.unreachable.add(to);
            setTimeout(() => attempt(Math.min(backoffMs * 2, 500)), backoffMs).unref();
            return;
          }
          const failure = new CollectiveError("SEND_FAILED", call.info, `sending to rank ${to} failed: ${(err as Error).message}`);
          if (call.settled) this.report(failure);
          else call.fail(failure);
        },
      );
    };
    attempt(20);
  }

  private stateOf(key: string): GroupState {
    let s = this.groups.get(key);
    if (!s) {
      s = new GroupState(key);
      this.groups.set(key, s);
    }
    return s;
  }

  private onDelivery(d: Delivery): void {
    // The ack says "delivered", nothing more: what a block meant is settled by the collective.
    d.reply?.(true);
    if (this.abortReason !== undefined) return;
    let env: Envelope;
    try {
      const parsed = EnvelopeSchema.safeParse(d.body());
      if (!parsed.success) {
        this.report(new Error(`invalid collectives message dropped: ${parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`));
        return;
      }
      env = parsed.data;
    } catch (err) {
      this.report(new Error(`undecodable collectives message dropped: ${(err as Error).message}`));
      return;
    }
    const state = this.stateOf(env.g);
    if (state.poison) return;
    const call = state.active.get(env.s);
    if (call) {
      call.accept(env);
      return;
    }
    if (env.s >= state.nextSeq) {
      const list = state.early.get(env.s);
      if (list) list.push(env);
      else state.early.set(env.s, [env]);
      return;
    }
    // A message for a collective that already settled here: a broadcast root that finished
    // before the others, or the remains of a call that timed out. A different signature
    // means the members' sequences have parted ways.
    const sig = state.sigs.get(env.s);
    if (sig !== undefined && sig !== env.sig) {
      const info: CollectiveErrorInfo = { group: env.g, call: sig, seq: env.s, rank: this.rank };
      state.poisonWith(new CollectiveMismatchError(info, env.f, env.sig));
    }
  }
}

/** What a group needs of its endpoint. */
interface EndpointLink {
  readonly rank: number;
  readonly defaultTimeoutMs: number;
  /** Why calls are refused (the endpoint was aborted), if they are. */
  refusal(): string | undefined;
  send(to: number, env: Envelope, call: Call): void;
  /** Reports a problem that has no caller to reject. */
  report(err: Error): void;
}

/** What an endpoint knows of one group, including messages that came before its first call. */
class GroupState {
  handle?: HostGroup;
  nextSeq = 0;
  readonly active = new Map<number, Call>();
  readonly early = new Map<number, Envelope[]>();
  /** Signatures of recent calls by sequence number. */
  readonly sigs = new Map<number, string>();
  /** Set by a mismatch: the group's sequence is broken for good. */
  poison?: CollectiveError;

  constructor(readonly key: string) {}

  poisonWith(err: CollectiveError): void {
    this.poison ??= err;
    this.early.clear();
    for (const call of this.active.values()) call.fail(err);
  }

  remember(seq: number, sig: string): void {
    this.sigs.set(seq, sig);
    if (this.sigs.size > REMEMBERED_SIGS) this.sigs.delete(seq - REMEMBERED_SIGS);
  }
}

interface Waiting {
  readonly phase: number;
  readonly from: readonly number[];
  readonly resolve: (parts: Map<number, HostBuffer>) => void;
  readonly reject: (err: Error) => void;
}

/** One collective in progress on this rank: the blocks received so far, per phase and sender. */
class Call {
  /** Peers whose endpoint did not answer the last attempt to send them a block. */
  readonly unreachable = new Set<number>();
  /** Set once the call has settled: a send that fails after that is only reported. */
  settled = false;
  private readonly received: Map<number, HostBuffer>[] = [new Map(), new Map()];
  private waiting?: Waiting;
  private failure?: Error;

  constructor(
    readonly info: CollectiveErrorInfo,
    readonly deadline: number,
    private readonly members: ReadonlySet<number>,
    private readonly onMismatch: (err: CollectiveMismatchError) => void,
    private readonly report: (err: Error) => void,
  ) {}

  accept(env: Envelope): void {
    if (this.failure) return;
    if (env.sig !== this.info.call) {
      this.onMismatch(new CollectiveMismatchError(this.info, env.f, env.sig));
      return;
    }
    const got = this.received[env.p]!;
    if (!this.members.has(env.f) || env.f === this.info.rank || got.has(env.f)) {
      this.report(new Error(`collective #${env.s} on ${env.g}: stray or duplicate message from rank ${env.f} dropped`));
      return;
    }
    got.set(env.f, env.d);
    this.check();
  }

  /** Resolves with the blocks of `phase` from each of `from` once all have arrived. */
  collect(phase: number, from: readonly number[]): Promise<Map<number, HostBuffer>> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting = { phase, from, resolve, reject };
      this.check();
    });
  }

  /** Ranks the current phase still waits for. */
  missing(): number[] {
    const w = this.waiting;
    if (!w) return [];
    const got = this.received[w.phase]!;
    return w.from.filter((r) => !got.has(r));
  }

  fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.settled = true;
    const w = this.waiting;
    this.waiting = undefined;
    w?.reject(err);
  }

  private check(): void {
    const w = this.waiting;
    if (!w) return;
    const got = this.received[w.phase]!;
    if (!w.from.every((r) => got.has(r))) return;
    this.waiting = undefined;
    const parts = new Map<number, HostBuffer>();
    for (const r of w.from) parts.set(r, got.get(r)!);
    w.resolve(parts);
  }
}

/** Block boundaries of `length` elements over `n` members: as equal as can be, in order. */
function blockStarts(length: number, n: number): number[] {
  return Array.from({ length: n + 1 }, (_, i) => Math.floor((i * length) / n));
}

// The public methods are async so that a bad argument rejects rather than throws; each still
// takes its sequence number synchronously, in the order the caller made the calls.
class HostGroup implements Collectives<HostBuffer> {
  readonly ranks: readonly number[];
  readonly rank: number;
  readonly index: number;
  readonly name: string;
  private readonly others: readonly number[];
  private readonly members: ReadonlySet<number>;

  constructor(
    private readonly endpoint: EndpointLink,
    private readonly state: GroupState,
    ranks: number[],
  ) {
    this.ranks = Object.freeze(ranks);
    this.rank = endpoint.rank;
    this.index = ranks.indexOf(endpoint.rank);
    this.name = state.key;
    this.others = ranks.filter((r) => r !== endpoint.rank);
    this.members = new Set(ranks);
  }

  async allReduce<T extends HostBuffer>(buf: T, op: ReduceOp, opts?: CallOptions): Promise<T> {
    const dtype = dtypeOf(buf);
    return this.run("allReduce", `allReduce(${op}) ${dtype}[${buf.length}]`, opts, async (call) => {
      checkOp(call, op, dtype);
      const n = this.ranks.length;
      if (buf.byteLength <= SMALL_ALLREDUCE_BYTES || buf.length < n) {
        for (const r of this.others) this.send(call, r, 0, buf);
        const parts = await call.collect(0, this.others);
        const out = like(buf, buf.length);
        reduceInOrder(this.inOrder(parts, buf), op, out);
        return out;
      }
      const starts = blockStarts(buf.length, n);
      const block = (i: number) => buf.subarray(starts[i]!, starts[i + 1]!);
      this.ranks.forEach((r, j) => r !== this.rank && this.send(call, r, 0, block(j)));
      const parts = await call.collect(0, this.others);
      const mine = like(buf, starts[this.index + 1]! - starts[this.index]!);
      reduceInOrder(this.inOrder(parts, block(this.index)), op, mine);
      for (const r of this.others) this.send(call, r, 1, mine);
      const out = like(buf, buf.length);
      out.set(mine, starts[this.index]!);
      const reduced = await call.collect(1, this.others);
      this.ranks.forEach((r, j) => r !== this.rank && out.set(reduced.get(r)!, starts[j]!));
      return out;
    });
  }

  async reduceScatter<T extends HostBuffer>(buf: T, op: ReduceOp, opts?: CallOptions): Promise<T> {
    const dtype = dtypeOf(buf);
    return this.run("reduceScatter", `reduceScatter(${op}) ${dtype}[${buf.length}]`, opts, async (call) => {
      checkOp(call, op, dtype);
      const size = this.blockSize(call, buf.length);
      const block = (j: number) => buf.subarray(j * size, (j + 1) * size);
      this.ranks.forEach((r, j) => r !== this.rank && this.send(call, r, 0, block(j)));
      const parts = await call.collect(0, this.others);
      const out = like(buf, size);
      reduceInOrder(this.inOrder(parts, block(this.index)), op, out);
      return out;
    });
  }

  async allGather<T extends HostBuffer>(shard: T, opts?: CallOptions): Promise<T> {
    return this.run("allGather", `allGather ${dtypeOf(shard)}[${shard.length}]`, opts, async (call) => {
      for (const r of this.others) this.send(call, r, 0, shard);
      const parts = await call.collect(0, this.others);
      const out = like(shard, shard.length * this.ranks.length);
      this.inOrder(parts, shard).forEach((p, j) => out.set(p, j * shard.length));
      return out;
    });
  }

  async allToAll<T extends HostBuffer>(buf: T, opts?: CallOptions): Promise<T> {
    return this.run("allToAll", `allToAll ${dtypeOf(buf)}[${buf.length}]`, opts, async (call) => {
      const size = this.blockSize(call, buf.length);
      const block = (j: number) => buf.subarray(j * size, (j + 1) * size);
      this.ranks.forEach((r, j) => r !== this.rank && this.send(call, r, 0, block(j)));
      const parts = await call.collect(0, this.others);
      const out = like(buf, buf.length);
      this.inOrder(parts, block(this.index)).forEach((p, j) => out.set(p, j * size));
      return out;
    });
  }

  async broadcast<T extends HostBuffer>(buf: T, root: number, opts?: CallOptions): Promise<T> {
    return this.run("broadcast", `broadcast(root ${root}) ${dtypeOf(buf)}[${buf.length}]`, opts, async (call) => {
      if (!this.members.has(root)) throw new CollectiveError("INVALID", call.info, `root ${root} is not a member of the group`);
      if (root === this.rank) {
        for (const r of this.others) this.send(call, r, 0, buf);
        return buf.slice() as T;
      }
      const parts = await call.collect(0, [root]);
      // The received block is this rank's own: a decoded copy, or the sender's copy in-process.
      return parts.get(root) as T;
    });
  }

  async barrier(opts?: CallOptions): Promise<void> {
    return this.run("barrier", "barrier", opts, async (call) => {
      const empty = new Int32Array(0);
      for (const r of this.others) this.send(call, r, 0, empty);
      await call.collect(0, this.others);
    });
  }

  /** Takes the next sequence number and runs `body` under the call's deadline and span. */
  private async run<R>(op: CollectiveOp, sig: string, opts: CallOptions | undefined, body: (call: Call) => Promise<R>): Promise<R> {
    const state = this.state;
    const seq = state.nextSeq++;
    state.remember(seq, sig);
    const info: CollectiveErrorInfo = { group: this.name, call: sig, seq, rank: this.rank };
    const refusal = this.endpoint.refusal();
    if (refusal !== undefined) throw new CollectiveAbortedError(info, refusal);
    if (state.poison) throw new CollectiveError("MISMATCH", info, `the group's sequence broke earlier: ${state.poison.message}`);
    const timeoutMs = opts?.timeoutMs ?? this.endpoint.defaultTimeoutMs;
    const call = new Call(info, Date.now() + timeoutMs, new Set(this.ranks), (err) => state.poisonWith(err), (err) => this.endpoint.report(err));
    state.active.set(seq, call);
    const early = state.early.get(seq);
    state.early.delete(seq);
    for (const env of early ?? []) call.accept(env);
    const timer = setTimeout(
      () => call.fail(new CollectiveTimeoutError(info, timeoutMs, call.missing(), [...call.unreachable].sort((a, b) => a - b))),
      timeoutMs,
    );
    const span = tracer().startSpan(`collective ${op}`, {
      attributes: { "tessera.collective.group": this.name, "tessera.collective.seq": seq, "tessera.collective.call": sig },
    });
    try {
      return await body(call);
    } catch (err) {
      // An invalid call fails here only; the others will miss this rank and time out.
      call.fail(err as Error);
      span.recordException(err as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
      throw err;
    } finally {
      call.settled = true;
      clearTimeout(timer);
      state.active.delete(seq);
      span.end();
    }
  }

  private send(call: Call, to: number, phase: number, data: HostBuffer): void {
    const env: Envelope = { g: this.name, s: call.info.seq, p: phase, f: this.rank, sig: call.info.call, d: data };
    this.endpoint.send(to, env, call);
  }

  /** The members' parts in group order, with this rank's own at its index. */
  private inOrder(parts: Map<number, HostBuffer>, own: HostBuffer): HostBuffer[] {
    return this.ranks.map((r) => (r === this.rank ? own : parts.get(r)!));
  }

  private blockSize(call: Call, length: number): number {
    const n = this.ranks.length;
    if (length % n !== 0) throw new CollectiveError("INVALID", call.info, `length ${length} is not divisible by the group size ${n}`);
    return length / n;
  }
}

function checkOp(call: Call, op: ReduceOp, dtype: string): void {
  if (op !== "sum" && op !== "max" && op !== "min" && op !== "avg") {
    throw new CollectiveError("INVALID", call.info, `unknown reduce op "${String(op)}"`);
  }
  // An integer mean would have to pick a rounding; callers sum and divide where they know which.
  if (op === "avg" && dtype === "int32") throw new CollectiveError("INVALID", call.info, "avg is not defined for int32 buffers");
}

/**
 * `worldSize` endpoints on one in-process transport: several ranks in one process (tests, or
 * a single-process multi-rank run) through the same code as across processes.
 */
export async function startInProcessCollectives(
  worldSize: number,
  opts: Omit<HostCollectivesOptions, "transport" | "rank"> = {},
): Promise<{ readonly transport: InProcTransport; readonly ranks: HostCollectives[]; close(): Promise<void> }> {
  const transport = new InProcTransport();
  const ranks = await Promise.all(Array.from({ length: worldSize }, (_, rank) => HostCollectives.start({ ...opts, transport, rank })));
  return {
    transport,
    ranks,
    close: async () => {
      await Promise.all(ranks.map((c) => c.close()));
      await transport.close();
    },
  };
}
