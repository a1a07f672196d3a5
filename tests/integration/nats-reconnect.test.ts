// The NATS transport across a nats-server crash and restart on the same port: subscriptions
// resume, what was sent while disconnected arrives, and in-flight requests either complete
// once (retried with the same H.id) or fail with DisconnectedError.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { DisconnectedError, NoResponderError, TransportClosedError } from "../../runtime/errors.ts";
import { H, NatsTransport, type Delivery, type NatsStatusEvent } from "../../runtime/transport/index.ts";
import { startNatsServer, type NatsServer } from "../helpers/nats-server.ts";

let server: NatsServer;
let rx: NatsTransport;
let tx: NatsTransport;
const txEvents: NatsStatusEvent["type"][] = [];

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

before(async () => {
  server = await startNatsServer();
  // A generous grace: on a loaded machine rx may reconnect well after tx.
  const opts = { servers: server.url, job: "rc", reconnectTimeWaitMs: 100, noResponderGraceMs: 5000, onError: () => {} };
  rx = await NatsTransport.connect(opts);
  tx = await NatsTransport.connect(opts);
  tx.onStatus((e) => txEvents.push(e.type));
});
after(async () => {
  await tx?.close();
  await rx?.close();
  await server?.stop("SIGKILL");
});

test("across a server restart: subscriptions resume, queued sends arrive in order, in-flight asks settle once", async () => {
  const got: number[] = [];
  // Served by the sender's own connection: nats.js re-subscribes before it publishes anything
  // after a reconnect, so the queued sends cannot race a receiver that has not re-subscribed
  // yet (a tell to nobody is dropped, like any publish).
  await tx.serve("seq", (d) => got.push(d.body() as number));
  // Holds the first delivery of each "hold" message unanswered, like a handler still running when the
  // server dies; answers a repeat of the id, as the actor system's dedupe would.
  const seenIds = new Map<string, number>();
  const held: Delivery[] = [];
  await rx.serve("slow", (d) => {
    const id = d.headers[H.id];
    const n = (id ? seenIds.get(id) : 0) ?? 0;
    if (id) seenIds.set(id, n + 1);
    if (n === 0 && d.body() === "hold") held.push(d);
    else d.reply?.({ id, n });
  });

  await tx.send("seq", 0, {});
  await until(() => got.length === 1, 5000, "the first message");

  const withId = tx.request("slow", "hold", { [H.id]: "ask-1" }, 15_000);
  const withoutId = tx.request("slow", "hold", {}, 15_000);
  const withoutIdOutcome = withoutId.then(
    () => "completed",
    (err: Error) => err,
  );
  await until(() => held.length === 2, 5000, "both asks to arrive");

  await server.stop("SIGKILL");
  await until(() => !tx.isConnected, 5000, "the client to see the disconnect");
  // The ask without an id cannot be retried safely: it fails at once.
  const outcome = await withoutIdOutcome;
  assert.ok(outcome instanceof DisconnectedError, `expected DisconnectedError, got ${String(outcome)}`);

  // Sent while the server is down: queued by the transport, published on reconnect.
  for (let i = 1; i <= 50; i++) await tx.send("seq", i, {});
  const askedWhileDown = tx.request("slow", "c", { [H.id]: "ask-2" }, 15_000);

  await server.start();
  const r1 = await withId;
  assert.deepEqual(r1.body, { id: "ask-1", n: 1 }, "answered by the retry, with the same id");
  // The held first delivery answers late: its reply must not settle anything twice.
  held[0]?.reply?.({ id: "ask-1", n: 0, late: true });

  const r2 = await askedWhileDown;
  assert.deepEqual(r2.body, { id: "ask-2", n: 0 });
  await until(() => got.length === 51, 5000, "the queued sends");
  assert.deepEqual(got, Array.from({ length: 51 }, (_, i) => i));
  assert.equal(seenIds.get("ask-1"), 2, "the transport re-sent ask-1 exactly once");
  assert.ok(txEvents.includes("disconnect") && txEvents.includes("reconnect"), `events: ${txEvents.join(",")}`);

  // And the link is healthy again for fresh traffic.
  const r3 = await tx.request("slow", "d", { [H.id]: "ask-3" }, 5000);
  assert.deepEqual(r3.body, { id: "ask-3", n: 0 });
});

test("no responders just after a reconnect is retried until the server knows the subscriber", async () => {
  const srv = await startNatsServer();
  const opts = { servers: srv.url, job: "grace", reconnectTimeWaitMs: 50, onError: () => {} };
  const asker = await NatsTransport.connect({ ...opts, noResponderGraceMs: 3000 });
  let late: NatsTransport | undefined;
  try {
    await srv.stop("SIGKILL");
    await until(() => !asker.isConnected, 5000, "the disconnect");
    const reconnected = new Promise<void>((resolve) => asker.onStatus((e) => e.type === "reconnect" && resolve()));
    // Queued while down; published on reconnect, when nobody serves "late" yet.
    const ask = asker.request("late", "q", { [H.id]: "grace-1" }, 10_000);
    await srv.start();
    await reconnected;
    await new Promise((r) => setTimeout(r, 300));
    late = await NatsTransport.connect(opts);
    await late.serve("late", (d) => d.reply?.(`a:${String(d.body())}`));
    assert.equal((await ask).body, "a:q");
  } finally {
    await late?.close();
    await asker.close();
    await srv.stop("SIGKILL");
  }
});

test("outside the grace period no responders fails at once", async () => {
  const srv = await startNatsServer();
  const asker = await NatsTransport.connect({ servers: srv.url, job: "grace", noResponderGraceMs: 0, onError: () => {} });
  try {
    const t0 = Date.now();
    await assert.rejects(asker.request("nobody", "q", { [H.id]: "x" }, 10_000), NoResponderError);
    assert.ok(Date.now() - t0 < 5000);
  } finally {
    await asker.close();
    await srv.stop("SIGKILL");
  }
});

test("the queue for a lost connection is bounded, and closing while disconnected settles everything", async () => {
  const srv = await startNatsServer();
  const t = await NatsTransport.connect({
    servers: srv.url,
    job: "bounded",
    reconnectTimeWaitMs: 50,
    maxQueuedBytes: 10_000,
    onError: () => {},
  });
  try {
    await srv.stop("SIGKILL");
    await until(() => !t.isConnected, 5000, "the disconnect");
    await t.send("x", new Uint8Array(6000), {});
    await assert.rejects(t.send("x", new Uint8Array(6000), {}), DisconnectedError);
    const queuedAsk = t.request("x", 1, {}, 10_000);
    const closedEvent = new Promise<void>((resolve) => t.onStatus((e) => e.type === "closed" && resolve()));
    await t.close();
    await assert.rejects(queuedAsk, TransportClosedError);
    await closedEvent;
  } finally {
    await t.close();
    await srv.stop("SIGKILL");
  }
});

test("when nats.js gives up reconnecting the transport closes and fails what is pending", async () => {
  const srv = await startNatsServer();
  const t = await NatsTransport.connect({
    servers: srv.url,
    job: "giveup",
    maxReconnectAttempts: 2,
    reconnectTimeWaitMs: 50,
    onError: () => {},
  });
  const closed = new Promise<NatsStatusEvent>((resolve) => t.onStatus((e) => e.type === "closed" && resolve(e)));
  try {
    await srv.stop("SIGKILL");
    const ask = t.request("x", 1, { [H.id]: "kept-for-retry" }, 30_000);
    await closed;
    await assert.rejects(ask, TransportClosedError);
    await assert.rejects(t.send("x", 1, {}), TransportClosedError);
  } finally {
    await t.close();
  }
});
