// Worker entry: Node cannot load a .ts file as a worker by itself, so this registers tsx's
// loader in the worker thread, then runs the TypeScript worker.
import { register } from "tsx/esm/api";

register();
await import("./tokenize-worker.ts");
