// Child processes over a real NATS server: a kill -9 and a frozen (SIGSTOP) child are both
// declared dead within the heartbeat bound and restarted, and the new process answers asks.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { ActorSystem, ProcessSupervisor, type ProcessDeath, type SupervisedProcess } from "../../runtime/actors/index.ts";
import { NatsTransport } from "../../runtime/transport/index.ts";
import { startNatsServer, type NatsServer } from "../helpers/nats-server.ts";
import { ChildProtocol, childAddress } from "../fixtures/actors/child-protocol.ts";

const script = fileURLToPath(new URL("../fixtures/actors/supervised-child.ts", import.meta.url));
const heartbeat = { intervalMs: 200, deadAfterMs: 1500 };
// How late past deadAfterMs a death may be noticed on a loaded 2-core machine: the monitor
// checks every 100 ms, so this is all scheduling slack.
const slackMs = 1500;

let nats: NatsServer;
let transport: NatsTransport;
let system: ActorSystem;
let supervisor: ProcessSupervisor;

before(async () => {
  nats = await startNatsServer();
  transport = await NatsTransport.connect({ servers: nats.url, job: "supervision" });
  system = new ActorSystem({ transport, name: "launcher", log: () => {} });
  supervisor = await ProcessSupervisor.start(system, { address: "launcher.heartbeats" });
});

after(async () => {
  await system.shutdown();
  await transport.close();
  await nats.stop();
});

function nextDeath(child: SupervisedProcess): Promise<ProcessDeath> {
  return once(child, "dead").then(([d]) => d as ProcessDeath);
}

test("a child killed with SIGKILL, then one frozen with SIGSTOP, are declared dead within the bound and restarted", async () => {
  const child = supervisor.spawn({
    id: "rank0",
    script,
    env: { NATS_URL: nats.url, TESSERA_JOB: "supervision" },
    heartbeat,
    policy: { strategy: "restart", maxRestarts: 5, withinMs: 60_000 },
    startTimeoutMs: 20_000,
  });
  const restarts: number[] = [];
  child.on("restarted", (e) => restarts.push(e.incarnation));
  const ref = system.ref(childAddress("rank0"), ChildProtocol);

  await child.ready();
  const first = await ref.ask({ type: "whoami" });
  assert.deepEqual(first, { pid: child.pid, incarnation: 0 });

  // kill -9: the exit itself gives it away, well inside the heartbeat bound.
  let death = nextDeath(child);
  let t0 = Date.now();
  process.kill(first.pid, "SIGKILL");
  let d = await death;
  assert.equal(d.reason, "exit");
  assert.equal(d.signal, "SIGKILL");
  assert.equal(d.directive, "restart");
  assert.ok(Date.now() - t0 <= heartbeat.deadAfterMs, `kill noticed after ${Date.now() - t0} ms`);
  assert.ok(d.sinceLastBeatMs <= heartbeat.deadAfterMs, `${d.sinceLastBeatMs} ms since the last beat`);
  await child.ready();
  const second = await ref.ask({ type: "whoami" });
  assert.equal(second.incarnation, 1);
  assert.notEqual(second.pid, first.pid);

  // SIGSTOP: the process lives but says nothing; only the missing heartbeats tell.
  death = nextDeath(child);
  t0 = Date.now();
  process.kill(second.pid, "SIGSTOP");
  d = await death;
  const noticedAfter = Date.now() - t0;
  assert.equal(d.reason, "heartbeat");
  assert.equal(d.pid, second.pid);
  // sinceLastBeatMs is rounded to whole ms: a silence of 1500.3 ms reads 1500.
  assert.ok(d.sinceLastBeatMs >= heartbeat.deadAfterMs, `declared dead after ${d.sinceLastBeatMs} ms of silence`);
  assert.ok(noticedAfter <= heartbeat.deadAfterMs + slackMs, `SIGSTOP noticed after ${noticedAfter} ms`);
  await child.ready();
  const third = await ref.ask({ type: "whoami" });
  assert.equal(third.incarnation, 2);
  // The frozen process was killed before its replacement started.
  assert.throws(() => process.kill(second.pid, 0), { code: "ESRCH" });
  assert.deepEqual(restarts, [1, 2]);
});

test("the system's shutdown stops its supervised processes", async () => {
  const child = supervisor.get("rank0");
  assert.ok(child?.pid, "the child of the test above is gone already");
  const pid = child.pid;
  const deaths: unknown[] = [];
  child.on("dead", (d) => deaths.push(d));
  await system.shutdown();
  assert.throws(() => process.kill(pid, 0), { code: "ESRCH" });
  assert.equal(supervisor.get("rank0"), undefined);
  // A requested stop is not a death: no policy ran.
  assert.deepEqual(deaths, []);
});
