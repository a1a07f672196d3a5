import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { ActorSystem, HeartbeatMonitor, HeartbeatProtocol, startHeartbeats, type Silence } from "../../runtime/actors/index.ts";
import { InProcTransport } from "../../runtime/transport/inproc.ts";

/** A monitor checking every 20 ms, torn down (with the system) when the test ends. */
async function setup(t: TestContext) {
  const transport = new InProcTransport();
  const system = new ActorSystem({ transport, name: "test", log: () => {} });
  t.after(async () => {
    await system.shutdown();
    await transport.close();
  });
  const monitor = await HeartbeatMonitor.start(system, "monitor", 20);
  return { monitor, to: system.ref("monitor", HeartbeatProtocol) };
}

function deathOf(monitor: HeartbeatMonitor, id: string, incarnation: number, deadAfterMs: number, startTimeoutMs?: number) {
  let firstBeat = false;
  const dead = new Promise<Silence>((resolve) => {
    monitor.watch(id, { incarnation, deadAfterMs, startTimeoutMs, onFirstBeat: () => (firstBeat = true), onDead: resolve });
  });
  return { dead, beganBeating: () => firstBeat };
}

test("a beating peer lives; once it falls silent it is declared dead after deadAfterMs", async (t) => {
  const { monitor, to } = await setup(t);
  const deadAfterMs = 300;
  const { dead, beganBeating } = deathOf(monitor, "peer", 0, deadAfterMs);
  let declared = false;
  void dead.then(() => (declared = true));
  const beats = startHeartbeats(to, { id: "peer", incarnation: 0 }, 50);
  // Three times the bound of beating: never declared dead.
  await sleep(3 * deadAfterMs);
  assert.equal(declared, false);
  assert.ok(beganBeating());
  beats.stop();
  const stoppedAt = performance.now();
  const silence = await dead;
  assert.equal(silence.reason, "heartbeat");
  assert.ok(silence.silentForMs > deadAfterMs);
  // Generous: under load the check timer may run late, but not seconds late.
  assert.ok(performance.now() - stoppedAt < deadAfterMs + 2_000);
});

test("beats of an old incarnation do not keep the new one alive", async (t) => {
  const { monitor, to } = await setup(t);
  const { dead, beganBeating } = deathOf(monitor, "peer", 1, 200, 200);
  const stale = startHeartbeats(to, { id: "peer", incarnation: 0 }, 20);
  const silence = await dead;
  stale.stop();
  assert.equal(silence.reason, "start-timeout");
  assert.equal(beganBeating(), false);
});

test("a stall of the monitor's own process does not get a beating peer declared dead", async (t) => {
  const { monitor, to } = await setup(t);
  const { dead } = deathOf(monitor, "peer", 0, 200);
  let declared: Silence | undefined;
  void dead.then((s) => (declared = s));
  const beats = startHeartbeats(to, { id: "peer", incarnation: 0 }, 20);
  await sleep(100);
  for (let round = 0; round < 3; round++) {
    // Block the event loop for longer than deadAfterMs, as a long synchronous step would.
    const until = performance.now() + 400;
    while (performance.now() < until);
    await sleep(60);
  }
  beats.stop();
  assert.equal(declared, undefined);
});
