// The other process policies over a real NATS server: "stop" gives up on a dead child, and
// "escalate" fails the actor that supervises it, whose own restart replaces the process.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import {
  ActorSystem,
  defineActor,
  defineProtocol,
  ProcessDeadError,
  ProcessSupervisor,
  superviseProcesses,
  type ActorSystemEvents,
  type ProcessDeath,
} from "../../runtime/actors/index.ts";
import { ActorStoppedError } from "../../runtime/errors.ts";
import { NatsTransport } from "../../runtime/transport/index.ts";
import { startNatsServer, type NatsServer } from "../helpers/nats-server.ts";
import { ChildProtocol, childAddress } from "../fixtures/actors/child-protocol.ts";

const script = fileURLToPath(new URL("../fixtures/actors/supervised-child.ts", import.meta.url));
const heartbeat = { intervalMs: 200, deadAfterMs: 1500 };

let nats: NatsServer;
let transport: NatsTransport;
let system: ActorSystem;
const env = () => ({ NATS_URL: nats.url, TESSERA_JOB: "policies" });

before(async () => {
  nats = await startNatsServer();
  transport = await NatsTransport.connect({ servers: nats.url, job: "policies" });
  system = new ActorSystem({ transport, name: "launcher", log: () => {} });
});

after(async () => {
  await system.shutdown();
  await transport.close();
  await nats.stop();
});

function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ESRCH";
  }
}

test("stop: a dead child process is not replaced", async () => {
  const supervisor = await ProcessSupervisor.start(system, { address: "stop.heartbeats" });
  const child = supervisor.spawn({ id: "solo", script, env: env(), heartbeat, policy: { strategy: "stop" } });
  await child.ready();
  const pid = child.pid!;
  const dead = once(child, "dead");
  const stopped = once(child, "stopped");
  process.kill(pid, "SIGKILL");
  const [d] = (await dead) as [ProcessDeath];
  assert.equal(d.directive, "stop");
  assert.deepEqual((await stopped)[0], { id: "solo", reason: "failed" });
  await assert.rejects(child.ready(), ActorStoppedError);
  assert.equal(supervisor.get("solo"), undefined);
  await supervisor.shutdown();
});

const Launcher = defineProtocol("launcher", {
  child: { msg: z.object({}), reply: z.object({ pid: z.number() }) },
});

test("escalate: a dead child process fails its supervising actor, whose restart starts a new process", async () => {
  const launcher = defineActor(Launcher, async (ctx) => {
    const processes = await superviseProcesses(ctx, "launcher.heartbeats");
    const rank = processes.spawn({ id: "rank1", script, env: env(), heartbeat, policy: { strategy: "escalate" } });
    await rank.ready();
    return { child: () => ({ pid: rank.pid! }) };
  });
  const failed = new Promise<ActorSystemEvents["failed"][0]>((resolve) => system.once("failed", resolve));
  const restarted = new Promise<ActorSystemEvents["restarted"][0]>((resolve) => system.once("restarted", resolve));
  const ref = await system.spawn("launcher", launcher, { supervision: { strategy: "restart" } });
  const { pid: firstPid } = await ref.ask({ type: "child" });

  process.kill(firstPid, "SIGKILL");
  const f = await failed;
  assert.equal(f.address, "launcher");
  assert.equal(f.directive, "restart");
  assert.ok(f.error instanceof ProcessDeadError);
  assert.equal(f.error.death.reason, "exit");
  assert.equal((await restarted).incarnation, 1);

  // The new incarnation of the actor started a fresh process (its first incarnation).
  const { pid: secondPid } = await ref.ask({ type: "child" });
  assert.notEqual(secondPid, firstPid);
  assert.deepEqual(await system.ref(childAddress("rank1"), ChildProtocol).ask({ type: "whoami" }), {
    pid: secondPid,
    incarnation: 0,
  });

  // Stopping the actor takes its processes with it.
  await system.stop("launcher");
  assert.ok(isGone(secondPid), "child process outlived its supervising actor");
});
