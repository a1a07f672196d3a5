// The NATS server a local multi-rank job runs over when the config names none: Debian's
// `nats-server` on loopback, on a port the kernel picked free a moment before. The server
// is killed when the launcher exits, or dies of SIGTERM or SIGHUP (not of SIGKILL: nothing
// can follow that).
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";

const HOST = "127.0.0.1";

export interface LocalNats {
  readonly url: string;
  stop(): Promise<void>;
}

/** A port that was free a moment ago: bind port 0 and let the kernel choose. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, HOST, () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Debian's nats-server, else whatever `nats-server` PATH finds. */
export function natsServerBinary(): string {
  for (const p of ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]) if (existsSync(p)) return p;
  return "nats-server";
}

export async function startLocalNats(timeoutMs = 10_000): Promise<LocalNats> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    // A process group of its own: a terminal's Ctrl-C goes to the launcher's group, and the
    // launcher, which finishes the step and checkpoints first, still needs the server.
    const child = spawn(natsServerBinary(), ["-a", HOST, "-p", String(port)], { stdio: ["ignore", "ignore", "pipe"], detached: true });
    const killOnExit = () => child.kill("SIGKILL");
    // Being in a group of its own, the server hears no hangup or kill meant for the launcher:
    // the launcher takes it along, then dies of the signal as it would have.
    const onSignal = (sig: NodeJS.Signals) => {
      killOnExit();
      process.kill(process.pid, sig);
    };
    const signals = ["SIGTERM", "SIGHUP"] as const;
    const unhook = () => {
      process.off("exit", killOnExit);
      for (const sig of signals) process.off(sig, onSignal);
    };
    process.once("exit", killOnExit);
    for (const sig of signals) process.once(sig, onSignal);
    let log = "";
    try {
      await natsServerReady(child, timeoutMs, (l) => (log = l));
    } catch (err) {
      unhook();
      child.kill("SIGKILL");
      // Another process took the port since freePort() saw it free: try another.
      if (attempt < 5 && log.includes("address already in use")) continue;
      throw err;
    }
    return {
      url: `nats://${HOST}:${port}`,
      stop: async () => {
        unhook();
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise<void>((r) => child.once("exit", () => r()));
        child.kill("SIGTERM");
        const force = setTimeout(() => child.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(force);
      },
    };
  }
}

// Ready when this very process says so: a probe of the port could reach another server that
// took the port between freePort() and our bind.
export function natsServerReady(c: ChildProcess, timeoutMs: number, onLog: (log: string) => void = () => {}): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let log = "";
    const timer = setTimeout(() => reject(new Error(`nats-server did not get ready within ${timeoutMs} ms:\n${log}`)), timeoutMs);
    c.stderr?.on("data", (b: Buffer) => {
      log = (log + b.toString()).slice(-4000);
      onLog(log);
      if (log.includes("Server is ready")) {
        clearTimeout(timer);
        resolve();
      }
    });
    c.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start nats-server (install Debian's nats-server, or set nats.url): ${err.message}`));
    });
    c.once("exit", () => {
      clearTimeout(timer);
      reject(new Error(`nats-server exited at start:\n${log}`));
    });
  });
}
