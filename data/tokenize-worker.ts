// A tokenizer worker thread: loads the tokenizer once, then tokenizes batches of records.
import { parentPort, workerData } from "node:worker_threads";
import { TesseraTokenizer } from "./tokenizer.ts";
import type { WorkerRequest, WorkerResponse } from "./tokenize-pool.ts";

const { dir, multimodal } = workerData as { dir: string; multimodal: boolean };
const tok = TesseraTokenizer.load(dir);
const port = parentPort!;

port.on("message", (req: WorkerRequest) => {
  const results = req.records.map((r) => tok.tokenizeRecord(r, multimodal));
  const transfer: ArrayBuffer[] = [];
  for (const r of results) if ("tokens" in r) transfer.push(r.tokens.buffer as ArrayBuffer, r.labels.buffer as ArrayBuffer);
  port.postMessage({ id: req.id, results } satisfies WorkerResponse, transfer);
});
port.postMessage({ ready: true });
