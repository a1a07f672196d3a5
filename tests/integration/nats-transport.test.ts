// The NATS transport against a real nats-server on a random loopback port.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { connect, headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";
import { AskTimeoutError, CodecError, NoResponderError, TransportClosedError } from "../../runtime/errors.ts";
import { decode, encode } from "../../runtime/codec.ts";
import { H, NatsTransport, type Delivery } from "../../runtime/transport/index.ts";
import { CHUNK_HEADER } from "../../runtime/transport/chunking.ts";
import { startNatsServer, type NatsServer } from "../helpers/nats-server.ts";

/** Resolves when `cond` holds, polling; fails after `ms`. */
async function until(cond: () => boolean, ms = 5000, what = "condition"): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("NATS transport", () => {
  let server: NatsServer;
  const open: { close(): Promise<void> }[] = [];
  const transport = async (job = "t", extra: Partial<Parameters<typeof NatsTransport.connect>[0]> = {}) => {
    const t = await NatsTransport.connect({ servers: server.url, job, onError: () => {}, ...extra });
    open.push(t);
    return t;
  };
  const raw = async (): Promise<NatsConnection> => {
    const nc = await connect({ servers: server.url });
    open.push(nc);
    return nc;
  };

  before(async () => {
    // A small max_payload makes chunking cheap to exercise; the 5 MB test uses the default.
    server = await startNatsServer({ maxPayload: 64 * 1024 });
  });
  after(async () => {
    for (const c of open.reverse()) await c.close().catch(() => {});
    await server.stop("SIGKILL");
  });

  test("send delivers body and headers; the job namespaces subjects", async () => {
    const a = await transport("job-a");
    const b = await transport("job-b");
    const got: Delivery[] = [];
    await a.serve("inbox.1", (d) => got.push(d));
    await b.serve("inbox.1", () => assert.fail("another job's address got the message"));
    assert.equal(a.subjectFor("inbox.1"), "tessera.job-a.inbox.1");
    await a.send("inbox.1", { hello: "world", n: 3 }, { [H.type]: "greet", [H.from]: "me" });
    await until(() => got.length === 1);
    const d = got[0] as Delivery;
    assert.deepEqual(d.body(), { hello: "world", n: 3 });
    assert.equal(d.headers[H.type], "greet");
    assert.equal(d.headers[H.from], "me");
    assert.equal(d.reply, undefined);
    await assert.rejects(a.send("bad address", 1, {}), /invalid address/);
    await assert.rejects(NatsTransport.connect({ servers: server.url, job: "a.b" }), /invalid job name/);
  });

  test("chunked and small messages from one sender arrive whole and in order", async () => {
    const rx = await transport();
    const tx = await transport();
    assert.equal(tx.maxPayload, 64 * 1024, "the server's max_payload, read from the connection");
    const got: unknown[] = [];
    await rx.serve("ordered", (d) => got.push(d.body()));
    const n = 300;
    for (let i = 0; i < n; i++) {
      // Every 7th message is ~200 KB: 4 chunks under this server's 64 KB max_payload.
      const body = i % 7 === 0 ? { i, data: new Float64Array(25_000).fill(i) } : { i };
      await tx.send("ordered", body, {});
    }
    await until(() => got.length === n, 10_000, `${n} messages`);
    got.forEach((m, i) => {
      const msg = m as { i: number; data?: Float64Array };
      assert.equal(msg.i, i);
      if (i % 7 === 0) {
        assert.ok(msg.data instanceof Float64Array);
        assert.equal(msg.data.length, 25_000);
        assert.ok(msg.data.every((x) => x === i));
      }
    });
    assert.equal(rx.pendingReassemblies, 0);
  });

  test("sends (published at the end of the turn) never fall behind a later request of the same sender", async () => {
    const rx = await transport();
    const tx = await transport();
    const got: number[] = [];
    await rx.serve("mixed", (d) => {
      got.push(d.body() as number);
      d.reply?.("ok");
    });
    const asks: Promise<unknown>[] = [];
    for (let i = 0; i < 200; i++) {
      if (i % 10 === 9) asks.push(tx.request("mixed", i, {}, 5000));
      else void tx.send("mixed", i, {});
    }
    await Promise.all(asks);
    await until(() => got.length === 200, 5000, "200 messages");
    assert.deepEqual(got, Array.from({ length: 200 }, (_, i) => i));
  });

  test("request/reply, including chunked request and reply, with headers both ways", async () => {
    const rx = await transport();
    const tx = await transport();
    await rx.serve("echo", (d) => {
      const body = d.body() as { data: Uint8Array };
      d.reply?.({ len: body.data.byteLength, back: body.data }, { "x-echo": d.headers["x-q"] ?? "" });
    });
    const small = await tx.request("echo", { data: new Uint8Array([1, 2, 3]) }, { "x-q": "s" }, 5000);
    assert.deepEqual(small.body, { len: 3, back: new Uint8Array([1, 2, 3]) });
    assert.equal(small.headers["x-echo"], "s");
    const big = new Uint8Array(300_000).map((_, i) => i % 251);
    const r = await tx.request("echo", { data: big }, { "x-q": "b" }, 5000);
    const body = r.body as { len: number; back: Uint8Array };
    assert.equal(body.len, big.byteLength);
    assert.deepEqual(body.back, big);
    assert.equal(r.headers["x-echo"], "b");
    assert.equal(r.headers[CHUNK_HEADER], undefined, "transport headers do not leak to callers");
  });

  test("request errors: no responder, timeout, closed transport", async () => {
    const rx = await transport();
    const tx = await transport();
    await assert.rejects(tx.request("nobody.home", {}, {}, 5000), NoResponderError);
    await assert.rejects(tx.request("nobody.home", new Uint8Array(200_000), {}, 5000), NoResponderError, "chunked");
    await rx.serve("silent", () => {});
    const t0 = Date.now();
    await assert.rejects(tx.request("silent", {}, {}, 200), AskTimeoutError);
    assert.ok(Date.now() - t0 >= 190);
    const pending = assert.rejects(tx.request("silent", {}, {}, 10_000), TransportClosedError);
    await tx.close();
    await pending;
    await assert.rejects(tx.request("silent", {}, {}, 1000), TransportClosedError);
    await assert.rejects(tx.send("silent", {}, {}), TransportClosedError);
  });

  test("a served address that closes stops getting messages and yields no responders", async () => {
    const rx = await transport();
    const tx = await transport();
    const served = await rx.serve("short.lived", (d) => d.reply?.("here"));
    assert.equal((await tx.request("short.lived", {}, {}, 5000)).body, "here");
    await assert.rejects(rx.serve("short.lived", () => {}), /already served/);
    await served.close();
    await assert.rejects(tx.request("short.lived", {}, {}, 5000), NoResponderError);
  });

  test("garbage bytes surface as CodecError from body(), and the subscription lives on", async () => {
    const rx = await transport();
    const nc = await raw();
    const seen: string[] = [];
    await rx.serve("victim", (d) => {
      try {
        const b = d.body();
        seen.push(`ok:${JSON.stringify(b)}`);
        d.reply?.({ ok: b });
      } catch (err) {
        assert.ok(err instanceof CodecError);
        assert.throws(() => d.body(), CodecError, "body() keeps failing the same way");
        seen.push("codec");
        d.reply?.({ error: (err as Error).message });
      }
    });
    const subject = rx.subjectFor("victim");
    const garbage = new Uint8Array([0xc1, 0xff, 0x00, 0x13]);
    const errReply = decode((await nc.request(subject, garbage, { timeout: 5000 })).data) as { error: string };
    assert.match(errReply.error, /cannot decode/);
    // A malformed chunk header is garbage too, and answered the same way.
    const h = natsHeaders();
    h.set(CHUNK_HEADER, "nonsense");
    const errReply2 = decode((await nc.request(subject, encode(1), { timeout: 5000, headers: h })).data) as {
      error: string;
    };
    assert.match(errReply2.error, /malformed/);
    const okReply = decode((await nc.request(subject, encode({ x: 1 }), { timeout: 5000 })).data);
    assert.deepEqual(okReply, { ok: { x: 1 } });
    assert.deepEqual(seen, ["codec", "codec", 'ok:{"x":1}']);
  });

  test("a chunked message whose sender vanished is dropped after the reassembly timeout", async () => {
    const rx = await transport("t", { reassemblyTimeoutMs: 200 });
    const nc = await raw();
    const got: unknown[] = [];
    await rx.serve("partial", (d) => got.push(d.body()));
    const h = natsHeaders();
    h.set(CHUNK_HEADER, "orphan 0 3 3000");
    nc.publish(rx.subjectFor("partial"), new Uint8Array(1000), { headers: h });
    await nc.flush();
    await until(() => rx.pendingReassemblies === 1, 5000, "the partial message");
    await until(() => rx.pendingReassemblies === 0, 5000, "the sweep");
    assert.deepEqual(got, []);
  });
});
