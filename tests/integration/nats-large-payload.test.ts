// A 5 MB typed array through a nats-server with its default 1 MB max_payload: chunked on the
// way out, reassembled on the way in, for a send, a request and its reply.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { NatsTransport } from "../../runtime/transport/index.ts";
import { startNatsServer, type NatsServer } from "../helpers/nats-server.ts";

let server: NatsServer;
let rx: NatsTransport;
let tx: NatsTransport;

before(async () => {
  server = await startNatsServer();
  rx = await NatsTransport.connect({ servers: server.url, job: "big" });
  tx = await NatsTransport.connect({ servers: server.url, job: "big" });
});
after(async () => {
  await tx?.close();
  await rx?.close();
  await server?.stop("SIGKILL");
});

/** 5 MB of floats whose every element is distinct, so a misplaced chunk cannot pass. */
function payload(seed: number): Float32Array {
  const a = new Float32Array((5 * 1024 * 1024) / 4);
  for (let i = 0; i < a.length; i++) a[i] = seed + i * 0.25;
  return a;
}

function assertSame(got: unknown, want: Float32Array): void {
  assert.ok(got instanceof Float32Array, `expected a Float32Array, got ${Object.prototype.toString.call(got)}`);
  assert.equal(got.length, want.length);
  assert.ok(
    Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(want.buffer)),
    "the bytes differ",
  );
}

test("the server's max_payload is read from the connection (1 MiB by default)", () => {
  assert.equal(tx.maxPayload, 1024 * 1024);
});

test("a 5 MB Float32Array round-trips as a send", async () => {
  const want = payload(1);
  const got = new Promise<unknown>((resolve) => {
    void rx.serve("sink", (d) => resolve((d.body() as { x: Float32Array }).x));
  });
  await tx.send("sink", { x: want }, {});
  assertSame(await got, want);
});

test("a 5 MB Float32Array round-trips as a request and as its reply", async () => {
  const want = payload(2);
  const back = payload(3);
  let received: unknown;
  await rx.serve("mirror", (d) => {
    received = (d.body() as { x: Float32Array }).x;
    d.reply?.({ y: back });
  });
  const r = await tx.request("mirror", { x: want }, {}, 10_000);
  assertSame(received, want);
  assertSame((r.body as { y: Float32Array }).y, back);
  assert.equal(rx.pendingReassemblies, 0);
  assert.equal(tx.pendingReassemblies, 0);
});
