// Heartbeats: how a supervisor learns that something it cannot see fail (another process, on
// this machine or another) is gone. The watched side tells `beat` messages to a monitor actor
// every `intervalMs`; the monitor declares it dead after `deadAfterMs` of silence.
//
// Beats carry the incarnation they come from: after a restart, a late beat of the old
// incarnation (a process that was frozen, then thawed) must not vouch for the new one.
import { z } from "zod";
import { defineProtocol } from "./protocol.ts";
import { defineActor, type ActorRef, type ActorSystem } from "./system.ts";

export const HeartbeatProtocol = defineProtocol("heartbeat", {
  beat: {
    msg: z.object({
      id: z.string(),
      incarnation: z.number().int().nonnegative(),
      pid: z.number().int(),
      seq: z.number().int().nonnegative(),
    }),
  },
});

export type HeartbeatSpec = (typeof HeartbeatProtocol)["spec"];

export interface HeartbeatTiming {
  /** How often the watched side beats (default 500 ms). */
  intervalMs: number;
  /** Silence after which it is declared dead (default 3000 ms). */
  deadAfterMs: number;
}

export const defaultHeartbeat: HeartbeatTiming = { intervalMs: 500, deadAfterMs: 3000 };

/** Beats to `to` every `intervalMs`, the first at once. Lost beats are the monitor's to judge. */
export function startHeartbeats(
  to: ActorRef<HeartbeatSpec>,
  who: { id: string; incarnation: number },
  intervalMs = defaultHeartbeat.intervalMs,
): { stop(): void } {
  let seq = 0;
  const beat = () => {
    to.tell({ type: "beat", id: who.id, incarnation: who.incarnation, pid: process.pid, seq: seq++ }).catch(() => {
      // A closed or disconnected transport: silence is exactly what the monitor must see.
    });
  };
  beat();
  const timer = setInterval(beat, intervalMs);
  // Heartbeats alone must not keep a process alive that has nothing else to do.
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

export type DeathReason = "heartbeat" | "start-timeout";

export interface Silence {
  reason: DeathReason;
  /** Time since the last beat, or since watching began when none came. */
  silentForMs: number;
}

export interface Watch {
  unwatch(): void;
  /** Time since the last beat (or since watching began), now. */
  silentForMs(): number;
}

export interface WatchOptions {
  incarnation: number;
  deadAfterMs: number;
  /** Time allowed for the first beat (a process must start first). Default: `deadAfterMs`. */
  startTimeoutMs?: number;
  onFirstBeat?: (pid: number) => void;
  onDead: (silence: Silence) => void;
}

interface Watched extends WatchOptions {
  since: number;
  lastBeatAt: number | undefined;
}

/**
 * An actor that receives beats at `address` and a timer that checks them. Each watched id is
 * declared dead at most once; watch it again (new incarnation) after a restart.
 */
export class HeartbeatMonitor {
  private readonly watched = new Map<string, Watched>();
  private readonly timer: NodeJS.Timeout;
  private readonly unhook: () => void;
  private lastCheckAt = performance.now();

  private constructor(
    private readonly system: ActorSystem,
    readonly address: string,
    private readonly checkEveryMs: number,
  ) {
    // Not unref'd: a monitor waiting to declare a death is work in progress, until close()
    // (or the system's shutdown).
    this.timer = setInterval(() => this.check(), checkEveryMs);
    this.unhook = system.onShutdown(() => this.close());
  }

  /** `checkEveryMs` bounds how late past `deadAfterMs` a death is noticed (default 100 ms). */
  static async start(system: ActorSystem, address: string, checkEveryMs = 100): Promise<HeartbeatMonitor> {
    const monitor = new HeartbeatMonitor(system, address, checkEveryMs);
    try {
      await system.spawn(
        address,
        defineActor(HeartbeatProtocol, () => ({ beat: (m) => monitor.onBeat(m.id, m.incarnation, m.pid) })),
      );
    } catch (err) {
      clearInterval(monitor.timer);
      monitor.unhook();
      throw err;
    }
    return monitor;
  }

  /** Starts watching `id` (replacing an earlier watch of it). */
  watch(id: string, opts: WatchOptions): Watch {
    const w: Watched = { ...opts, since: performance.now(), lastBeatAt: undefined };
    this.watched.set(id, w);
    return {
      unwatch: () => {
        if (this.watched.get(id) === w) this.watched.delete(id);
      },
      silentForMs: () => performance.now() - (w.lastBeatAt ?? w.since),
    };
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.unhook();
    this.watched.clear();
    await this.system.stop(this.address);
  }

  private onBeat(id: string, incarnation: number, pid: number): void {
    const w = this.watched.get(id);
    if (!w || w.incarnation !== incarnation) return;
    const first = w.lastBeatAt === undefined;
    w.lastBeatAt = performance.now();
    if (first) w.onFirstBeat?.(pid);
  }

  private check(): void {
    // Monotonic time: a wall-clock step must not kill (or revive) anything.
    const now = performance.now();
    const late = now - this.lastCheckAt - this.checkEveryMs;
    this.lastCheckAt = now;
    // This process itself stalled (a long synchronous step, a GC pause): beats that came
    // meanwhile may still sit unread in a socket, as timers run before I/O. Judge on the next
    // tick, once they have been read, rather than blame the peer for our own silence.
    if (late > this.checkEveryMs + 200) return;
    for (const [id, w] of this.watched) {
      const silence: Silence | undefined =
        w.lastBeatAt === undefined
          ? now - w.since > (w.startTimeoutMs ?? w.deadAfterMs)
            ? { reason: "start-timeout", silentForMs: now - w.since }
            : undefined
          : now - w.lastBeatAt > w.deadAfterMs
            ? { reason: "heartbeat", silentForMs: now - w.lastBeatAt }
            : undefined;
      if (!silence) continue;
      this.watched.delete(id);
      w.onDead(silence);
    }
  }
}
