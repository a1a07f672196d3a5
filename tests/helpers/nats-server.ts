// A real nats-server for tests: started on a free loopback port, stopped and restarted on
// that same port (to test reconnects), and killed when the test process exits whatever
// happens, so no server outlives its test.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, natsServerBinary, natsServerReady } from "../../actors/local-nats.ts";

export { freePort };
const host = "127.0.0.1";

export interface NatsServerOptions {
  /** The server's `max_payload` in bytes (its default is 1 MiB). */
  maxPayload?: number;
  /** How long to wait for the server to accept connections. */
  startTimeoutMs?: number;
}

export interface NatsServer {
  readonly port: number;
  /** `nats://127.0.0.1:PORT` */
  readonly url: string;
  /** Stops the server; `SIGKILL` simulates a crash, the default `SIGTERM` a clean shutdown. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same port (after `stop`), and waits until it accepts. */
  start(): Promise<void>;
  /** `stop` then `start`. */
  restart(signal?: NodeJS.Signals): Promise<void>;
}

const live = new Set<ChildProcess>();
const killAll = () => {
  for (const child of live) child.kill("SIGKILL");
};
process.once("exit", killAll);
// A signal skips "exit": kill the servers, then let the signal do what it would have done.
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(sig, () => {
    killAll();
    process.kill(process.pid, sig);
  });
}

export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsServer> {
  const config: string[] = [];
  if (opts.maxPayload !== undefined) {
    // This server version has no command-line flag for max_payload: it takes a config file.
    const dir = mkdtempSync(join(tmpdir(), "tessera-nats-"));
    const conf = join(dir, "server.conf");
    writeFileSync(conf, `max_payload: ${opts.maxPayload}\n`);
    process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
    config.push("-c", conf);
  }
  const startTimeoutMs = opts.startTimeoutMs ?? 10_000;
  let port = 0;
  let child: ChildProcess | undefined;
  let log = "";

  // Ready when this very process says so: a probe of the port could reach another test's
  // server that took the port between freePort() and our bind.
  const start = async () => {
    if (child) throw new Error("nats-server is already running");
    log = "";
    const c = spawn(natsServerBinary(), ["-a", host, "-p", String(port), ...config], { stdio: ["ignore", "ignore", "pipe"] });
    child = c;
    live.add(c);
    c.once("exit", () => {
      live.delete(c);
      if (child === c) child = undefined;
    });
    try {
      await natsServerReady(c, startTimeoutMs, (l) => (log = l));
    } catch (err) {
      c.kill("SIGKILL");
      throw err;
    }
  };

  const stop = async (signal: NodeJS.Signals = "SIGTERM") => {
    const c = child;
    if (!c) return;
    const exited = new Promise<void>((resolve) => c.once("exit", () => resolve()));
    c.kill(signal);
    const forced = setTimeout(() => c.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(forced);
  };

  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    try {
      await start();
      break;
    } catch (err) {
      // Another process took the port since freePort() saw it free: try another.
      if (attempt >= 5 || !log.includes("address already in use")) throw err;
    }
  }
  return {
    port,
    url: `nats://${host}:${port}`,
    start,
    stop,
    restart: async (signal) => {
      await stop(signal);
      await start();
    },
  };
}
