// Supervision of child OS processes (one per rank, like torchrun). The child runs a script
// under `node --import tsx` that starts its own ActorSystem on a shared transport (NATS) and
// beats to its supervisor's HeartbeatMonitor (`startChildHeartbeats`). The supervisor
// declares a child dead when its process exits OR its beats stop for `deadAfterMs` (a hung or
// frozen process that is still alive, or one on a machine that vanished), kills what is left
// of it, and applies the child's policy: restart (spawn it again, within a restart budget),
// stop, or escalate (to `onEscalate`; inside an actor, `superviseProcesses` makes that fail
// the actor).
import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import { EventEmitter } from "node:events";
import { ActorStoppedError } from "../errors.ts";
import {
  defaultHeartbeat,
  HeartbeatMonitor,
  HeartbeatProtocol,
  startHeartbeats,
  type HeartbeatTiming,
  type Watch,
} from "./heartbeat.ts";
import { defaultPolicy, RestartBudget, type Directive, type SupervisionPolicy } from "./supervision.ts";
import type { ActorContext, ActorSystem } from "./system.ts";

/** Environment a supervised child reads (see `supervisedChildEnv`). */
const ENV = {
  id: "TESSERA_CHILD_ID",
  incarnation: "TESSERA_CHILD_INCARNATION",
  supervisor: "TESSERA_SUPERVISOR",
  intervalMs: "TESSERA_HEARTBEAT_MS",
} as const;

export interface ChildProcessSpec {
  /** Unique among the supervisor's children; the child's identity in its beats. */
  id: string;
  /** The module to run (`.ts` or `.js`), under `node --import tsx`. */
  script: string;
  args?: string[];
  /** Added to this process's environment (transport settings, the child's addresses, ...). */
  env?: Record<string, string>;
  cwd?: string;
  /** Default "inherit". */
  stdio?: StdioOptions;
  /** Default: restart, at most 3 times within 60 s, then escalate. */
  policy?: SupervisionPolicy;
  heartbeat?: Partial<HeartbeatTiming>;
  /** Time from spawn to the first beat (default 30 s: `tsx` compiles on a loaded machine). */
  startTimeoutMs?: number;
  /** After SIGTERM on `stop()`, how long before SIGKILL (default 5 s). */
  killGraceMs?: number;
}

export type ProcessDeathReason = "exit" | "heartbeat" | "start-timeout";

export interface ProcessDeath {
  id: string;
  pid: number | undefined;
  incarnation: number;
  reason: ProcessDeathReason;
  /** For reason "exit": the exit code, or the signal that killed it. */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Time since the last beat when death was declared (since spawn when none came). */
  sinceLastBeatMs: number;
  /** The directive the policy chose. */
  directive: Directive;
}

/** The failure a dead child process is to its supervisor (and to a policy function). */
export class ProcessDeadError extends Error {
  constructor(readonly death: Omit<ProcessDeath, "directive">) {
    const how =
      death.reason === "exit"
        ? `exited (${death.signal ?? `code ${death.code}`})`
        : death.reason === "heartbeat"
          ? `missed heartbeats for ${death.sinceLastBeatMs} ms`
          : `sent no heartbeat within ${death.sinceLastBeatMs} ms of starting`;
    super(`child process "${death.id}" (pid ${death.pid}) ${how}`);
    this.name = "ProcessDeadError";
  }
}

export interface SupervisedProcessEvents {
  /** The first beat of an incarnation: the child is up. */
  ready: [{ id: string; incarnation: number; pid: number }];
  dead: [ProcessDeath];
  restarted: [{ id: string; incarnation: number; pid: number | undefined }];
  /** No further incarnations: stopped on request, by policy, or escalated. */
  stopped: [{ id: string; reason: "requested" | "failed" | "escalated" }];
}

/** One supervised child process across its incarnations. */
export class SupervisedProcess extends EventEmitter<SupervisedProcessEvents> {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private beating = false;
  private watch: Watch | undefined;
  private incarnationValue = -1;
  private state: "running" | "dead" | "stopped" = "running";
  private readonly budget: RestartBudget;
  private readyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];

  constructor(
    readonly spec: ChildProcessSpec,
    private readonly monitor: HeartbeatMonitor,
    private readonly onEscalate: (error: ProcessDeadError) => void,
  ) {
    super();
    this.budget = new RestartBudget(spec.policy ?? defaultPolicy);
  }

  get id(): string {
    return this.spec.id;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** 0 for the first process, one more per restart. */
  get incarnation(): number {
    return this.incarnationValue;
  }

  /** Resolves at the current incarnation's first beat; rejects if the child stops for good first. */
  ready(): Promise<void> {
    if (this.state === "stopped") return Promise.reject(new ActorStoppedError(`child process "${this.id}" is stopped`));
    if (this.state === "running" && this.beating) return Promise.resolve();
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  /** Starts the next incarnation. */
  start(): void {
    this.incarnationValue++;
    const incarnation = this.incarnationValue;
    const timing = { ...defaultHeartbeat, ...this.spec.heartbeat };
    this.state = "running";
    this.beating = false;
    const child = spawn(process.execPath, ["--import", import.meta.resolve("tsx"), this.spec.script, ...(this.spec.args ?? [])], {
      cwd: this.spec.cwd,
      stdio: this.spec.stdio ?? "inherit",
      env: {
        ...process.env,
        ...this.spec.env,
        [ENV.id]: this.id,
        [ENV.incarnation]: String(incarnation),
        [ENV.supervisor]: this.monitor.address,
        [ENV.intervalMs]: String(timing.intervalMs),
      },
    });
    this.child = child;
    // A spawn that fails outright emits "error" and never "exit".
    this.exited = new Promise((resolve) => {
      child.once("exit", () => resolve());
      child.once("error", () => resolve());
    });
    child.once("exit", (code, signal) => {
      if (this.incarnationValue === incarnation && this.state === "running") {
        this.declareDead(incarnation, "exit", code, signal);
      }
    });
    child.once("error", (err) => {
      // Spawning itself failed (no exit follows): as good as an exit.
      if (this.incarnationValue === incarnation && this.state === "running") {
        process.emitWarning(`spawning child process "${this.id}" failed: ${err.message}`);
        this.declareDead(incarnation, "exit", null, null);
      }
    });
    this.watch = this.monitor.watch(this.id, {
      incarnation,
      deadAfterMs: timing.deadAfterMs,
      startTimeoutMs: this.spec.startTimeoutMs ?? 30_000,
      onFirstBeat: (pid) => {
        this.beating = true;
        for (const w of this.readyWaiters.splice(0)) w.resolve();
        this.emit("ready", { id: this.id, incarnation, pid });
      },
      onDead: (silence) => this.declareDead(incarnation, silence.reason, null, null, silence.silentForMs),
    });
  }

  /** Stops the child for good: SIGTERM, then SIGKILL after `killGraceMs`. */
  async stop(): Promise<void> {
    if (this.state === "stopped") return;
    this.finish("requested");
    await this.kill("SIGTERM");
  }

  private declareDead(
    incarnation: number,
    reason: ProcessDeathReason,
    code: number | null,
    signal: NodeJS.Signals | null,
    silentForMs?: number,
  ): void {
    if (incarnation !== this.incarnationValue || this.state !== "running") return;
    this.state = "dead";
    const sinceLastBeatMs = Math.round(silentForMs ?? this.watch?.silentForMs() ?? 0);
    this.watch?.unwatch();
    const base = { id: this.id, pid: this.child?.pid, incarnation, reason, code, signal, sinceLastBeatMs };
    const error = new ProcessDeadError(base);
    const { directive } = this.budget.decide(error);
    this.emit("dead", { ...base, directive });
    void this.apply(directive, error);
  }

  private async apply(directive: Directive, error: ProcessDeadError): Promise<void> {
    // Whatever is left of it (a frozen or hung process) goes before anything replaces it: it
    // may hold a GPU, a port, or a subscription that would get the new one's messages.
    await this.kill("SIGKILL");
    if (this.state !== "dead") return; // stopped meanwhile
    if (directive === "restart") {
      this.start();
      this.emit("restarted", { id: this.id, incarnation: this.incarnationValue, pid: this.child?.pid });
    } else if (directive === "stop") {
      this.finish("failed");
    } else {
      this.finish("escalated");
      this.onEscalate(error);
    }
  }

  private finish(reason: "requested" | "failed" | "escalated"): void {
    this.state = "stopped";
    this.watch?.unwatch();
    const err = new ActorStoppedError(`child process "${this.id}" stopped (${reason})`);
    for (const w of this.readyWaiters.splice(0)) w.reject(err);
    this.emit("stopped", { id: this.id, reason });
  }

  private async kill(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    if (signal !== "SIGKILL") {
      const force = setTimeout(() => child.kill("SIGKILL"), this.spec.killGraceMs ?? 5_000);
      await this.exited;
      clearTimeout(force);
    } else {
      await this.exited;
    }
  }
}

export interface ProcessSupervisorOptions {
  /** Address of the heartbeat monitor the children beat to (unique per supervisor). */
  address: string;
  /** Where escalated failures go. Default: logged by the system, children otherwise untouched. */
  onEscalate?: (error: ProcessDeadError) => void;
}

/** Spawns and supervises child processes; one heartbeat monitor for all of them. */
export class ProcessSupervisor {
  private readonly children = new Map<string, SupervisedProcess>();
  private readonly unhook: () => void;

  private constructor(
    system: ActorSystem,
    private readonly monitor: HeartbeatMonitor,
    private readonly onEscalate: (error: ProcessDeadError) => void,
  ) {
    this.unhook = system.onShutdown(() => this.shutdown());
  }

  static async start(system: ActorSystem, opts: ProcessSupervisorOptions): Promise<ProcessSupervisor> {
    const monitor = await HeartbeatMonitor.start(system, opts.address);
    const onEscalate = opts.onEscalate ?? ((err) => system.log("error", `${err.message}; nobody supervises it further`));
    return new ProcessSupervisor(system, monitor, onEscalate);
  }

  /** Starts a child process and supervises it. */
  spawn(spec: ChildProcessSpec): SupervisedProcess {
    if (this.children.has(spec.id)) throw new Error(`child process "${spec.id}" already exists`);
    const p = new SupervisedProcess(spec, this.monitor, this.onEscalate);
    this.children.set(spec.id, p);
    p.once("stopped", () => this.children.delete(spec.id));
    p.start();
    return p;
  }

  get(id: string): SupervisedProcess | undefined {
    return this.children.get(id);
  }

  /** Stops every child, then the monitor. Also run by the system's shutdown. */
  async shutdown(): Promise<void> {
    this.unhook();
    await Promise.all([...this.children.values()].map((c) => c.stop()));
    await this.monitor.close();
  }
}

/**
 * Child processes supervised by an actor: an escalated failure fails the actor (its own
 * parent decides next), and the actor's stop or restart kills them.
 */
export async function superviseProcesses(ctx: ActorContext, address: string): Promise<ProcessSupervisor> {
  const sup = await ProcessSupervisor.start(ctx.system, { address, onEscalate: (err) => ctx.fail(err) });
  ctx.onStop(() => sup.shutdown());
  return sup;
}

export interface SupervisedChildEnv {
  id: string;
  incarnation: number;
  /** The address of the supervisor's heartbeat monitor. */
  supervisor: string;
  intervalMs: number;
}

/** In a child process: what its supervisor passed, or undefined when nobody supervises it. */
export function supervisedChildEnv(env: NodeJS.ProcessEnv = process.env): SupervisedChildEnv | undefined {
  const id = env[ENV.id];
  const supervisor = env[ENV.supervisor];
  if (!id || !supervisor) return undefined;
  return {
    id,
    supervisor,
    incarnation: Number(env[ENV.incarnation] ?? 0),
    intervalMs: Number(env[ENV.intervalMs] ?? defaultHeartbeat.intervalMs),
  };
}

/** In a child process: beats to its supervisor over `system`'s transport until stopped. */
export function startChildHeartbeats(system: ActorSystem, child = supervisedChildEnv()): { stop(): void } {
  if (!child) throw new Error(`not a supervised child process (${ENV.id} / ${ENV.supervisor} unset)`);
  return startHeartbeats(system.ref(child.supervisor, HeartbeatProtocol), child, child.intervalMs);
}
