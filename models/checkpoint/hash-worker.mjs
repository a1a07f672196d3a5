// Worker entry for sha256Files: Node cannot load a .ts file as a worker by itself, so this
// registers tsx's loader in the worker thread, then hashes the one file it was given.
import { parentPort, workerData } from "node:worker_threads";
import { register } from "tsx/esm/api";

register();
const { sha256File } = await import("./durable.ts");
parentPort.postMessage(await sha256File(workerData.path));
