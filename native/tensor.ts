// Tensor: a handle to native storage plus its dtype and shape, and the rules of its release.
// Memory goes back deterministically: dispose(), or scope(fn), which frees every tensor made
// inside fn except those reachable from its return value and those passed to keep(). A
// FinalizationRegistry is only the backstop for tensors that escape both. liveTensors()
// counts what is still held, so tests can prove that a step leaks nothing.
import { loadAddon, type Handle } from "./addon.ts";
import { cudaAddon, cudaFn, profiledCopy } from "./cuda.ts";
import { deviceCode, deviceOfCode, dtypeCode, type Device, type DType } from "./dtype.ts";

let liveCount = 0;
let liveCudaCount = 0;
const scopes: Set<Tensor>[] = [];
/** The scope that will free each tensor (absent: kept, or made outside any scope). */
const owner = new WeakMap<Tensor, Set<Tensor>>();

// Held value: a box saying whether the tensor was disposed; GC of a live tensor decrements
// the count (the addon's External finalizer frees the storage itself).
interface Lease {
  disposed: boolean;
  cuda: boolean;
}
const backstop = new FinalizationRegistry<Lease>((lease) => {
  if (lease.disposed) return;
  liveCount--;
  if (lease.cuda) liveCudaCount--;
});

export class Tensor {
  /** Where the storage lives: "cuda" tensors are read back with toArray() (a copy to host). */
  readonly device: Device;
  readonly numel: number;
  readonly shape: readonly number[];
  #handle: Handle | null;
  #lease: Lease;

  /** Wraps a fresh native handle; use tensor(), zeros(), randn() or the ops to make tensors. */
  constructor(
    handle: Handle,
    readonly dtype: DType,
    shape: readonly number[],
  ) {
    this.#handle = handle;
    this.device = deviceOfCode[loadAddon().deviceOf(handle)]!;
    this.shape = Object.freeze([...shape]);
    this.numel = shape.reduce((a, b) => a * b, 1);
    this.#lease = { disposed: false, cuda: this.device === "cuda" };
    liveCount++;
    if (this.#lease.cuda) liveCudaCount++;
    backstop.register(this, this.#lease, this.#lease);
    adopt(this, scopes.at(-1));
  }

  get disposed(): boolean {
    return this.#handle === null;
  }

  /** Frees the storage now (views of it keep it alive until they go too). Idempotent. */
  dispose(): void {
    if (this.#handle === null) return;
    loadAddon().release(this.#handle);
    this.#handle = null;
    this.#lease.disposed = true;
    backstop.unregister(this.#lease);
    liveCount--;
    if (this.#lease.cuda) liveCudaCount--;
    adopt(this, undefined);
  }

  /** The native handle, for native/ ops; `op` and `arg` name the caller in the error. */
  handle(op: string, arg = "tensor"): Handle {
    if (this.#handle === null) throw new Error(`${op}: ${arg} is a disposed tensor`);
    return this.#handle;
  }

  /** A copy of the contents on the host (bfloat16 comes back as float32); for cuda, waits for the device. */
  toArray(): Float32Array | Float64Array | Int32Array | BigInt64Array {
    return loadAddon().toArray(this.handle("toArray"));
  }

  /** A float64 copy whatever the dtype (int64 through Number): handy where the type must be static. */
  toFloat64Array(): Float64Array {
    const a = this.toArray();
    return a instanceof BigInt64Array ? Float64Array.from(a, Number) : Float64Array.from(a);
  }

  item(): number {
    if (this.numel !== 1) throw new Error(`item: tensor has ${this.numel} elements, not 1`);
    const v = this.toArray()[0]!;
    return typeof v === "bigint" ? Number(v) : v;
  }

  /** A view with another shape over the same storage; one dimension may be -1. */
  reshape(shape: readonly number[]): Tensor {
    const resolved = resolveShape("reshape", shape, this.numel);
    return new Tensor(loadAddon().view(this.handle("reshape"), resolved), this.dtype, resolved);
  }

  /**
   * A view of rows [start, start + count) along dim 0, sharing the storage. The range is counted
   * from this tensor's first row (start >= 0) and may run past its own rows into the storage
   * beyond them (a view of several adjacent row views), never past the storage. A cuda view must
   * start 16-byte aligned.
   */
  rows(start: number, count: number): Tensor {
    if (this.shape.length < 1) throw new Error("rows: a tensor of at least one dimension");
    return new Tensor(loadAddon().viewRows(this.handle("rows"), start, count), this.dtype, [count, ...this.shape.slice(1)]);
  }

  clone(): Tensor {
    const h = this.handle("clone");
    return new Tensor(profiledCopy("clone", this.device === "cuda", () => loadAddon().clone(h)), this.dtype, this.shape);
  }

  /** A copy on device (a new tensor even when it is already there, so ownership stays simple). */
  to(device: Device): Tensor {
    checkDevice("to", device);
    const h = this.handle("to");
    return new Tensor(profiledCopy("to", this.device === "cuda" || device === "cuda", () => loadAddon().toDevice(h, deviceCode[device])), this.dtype, this.shape);
  }

  /** Removes this tensor from the scope it was made in, so that scope's end does not free it. */
  keep(): this {
    adopt(this, undefined);
    return this;
  }

  toString(): string {
    const where = this.device === "cpu" ? "" : `, ${this.device}`;
    return `Tensor(${this.dtype}, [${this.shape.join(", ")}]${where}${this.disposed ? ", disposed" : ""})`;
  }
}

function adopt(t: Tensor, scope: Set<Tensor> | undefined): void {
  owner.get(t)?.delete(t);
  if (scope) {
    scope.add(t);
    owner.set(t, scope);
  } else {
    owner.delete(t);
  }
}

function resolveShape(op: string, shape: readonly number[], numel: number): number[] {
  const out = [...shape];
  const free = out.indexOf(-1);
  if (out.some((d, i) => !Number.isInteger(d) || (d < 0 && i !== free)) || out.lastIndexOf(-1) !== free) {
    throw new Error(`${op}: invalid shape [${shape.join(", ")}]`);
  }
  if (free >= 0) {
    const rest = out.reduce((a, d, i) => (i === free ? a : a * d), 1);
    if (rest === 0 || numel % rest !== 0) throw new Error(`${op}: cannot infer -1 in [${shape.join(", ")}] for ${numel} elements`);
    out[free] = numel / rest;
  }
  const n = out.reduce((a, b) => a * b, 1);
  if (n !== numel) throw new Error(`${op}: shape [${shape.join(", ")}] holds ${n} elements, the tensor ${numel}`);
  return out;
}

/**
 * Runs fn; frees every tensor created inside except those reachable from its result (through
 * arrays, Maps, Sets and objects' own enumerable properties) or kept.
 */
export function scope<T>(fn: () => T): T {
  const mine = new Set<Tensor>();
  scopes.push(mine);
  let result: T;
  try {
    result = fn();
  } catch (err) {
    scopes.pop();
    for (const t of [...mine]) t.dispose();
    throw err;
  }
  scopes.pop();
  if (result !== null && typeof (result as { then?: unknown })?.then === "function") {
    for (const t of [...mine]) t.dispose();
    throw new Error("scope: fn returned a promise; scopes are synchronous (await outside them)");
  }
  const escaping = new Set<Tensor>();
  collectTensors(result, escaping, new Set());
  const parent = scopes.at(-1);
  for (const t of [...mine]) {
    if (escaping.has(t)) adopt(t, parent);
    else t.dispose();
  }
  return result;
}

function collectTensors(value: unknown, into: Set<Tensor>, seen: Set<unknown>): void {
  if (value === null || typeof value !== "object" || seen.has(value)) return;
  seen.add(value);
  if (value instanceof Tensor) into.add(value);
  else if (Array.isArray(value)) for (const v of value) collectTensors(v, into, seen);
  else if (value instanceof Map) for (const v of value.values()) collectTensors(v, into, seen);
  else if (value instanceof Set) for (const v of value) collectTensors(v, into, seen);
  else if (!ArrayBuffer.isView(value) && !(value instanceof ArrayBuffer)) {
    // Plain objects and class instances alike: their own enumerable properties (tensors in
    // #private fields cannot be seen; keep() those).
    for (const v of Object.values(value)) collectTensors(v, into, seen);
  }
}

/** Exempts t from every enclosing scope: the caller now owns it and must dispose it. */
export function keep<T extends Tensor>(t: T): T {
  return t.keep();
}

export interface LiveTensors {
  /** Tensors not yet disposed (or collected), on every device. */
  count: number;
  /** Bytes of host storage they hold. */
  bytes: number;
  /** Of count, those on cuda. */
  cudaCount: number;
  /** Bytes of device storage they hold (as asked for; the allocator's size classes are in cudaMemoryStats). */
  cudaBytes: number;
}

/** What live tensors hold, so that tests can prove a step leaks nothing (views share storage). */
export function liveTensors(): LiveTensors {
  const a = loadAddon();
  return { count: liveCount, bytes: a.liveBytes(0), cudaCount: liveCudaCount, cudaBytes: a.liveBytes(1) };
}

export interface TensorOptions {
  dtype?: DType;
  device?: Device;
}

function checkShape(op: string, shape: readonly number[]): number[] {
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`${op}: invalid shape [${String(shape)}]`);
  }
  return [...shape];
}

function checkDtype(op: string, dtype: DType): void {
  if (!Object.hasOwn(dtypeCode, dtype)) throw new Error(`${op}: unknown dtype ${String(dtype)}`);
}

function checkTensor(op: string, name: string, t: Tensor): void {
  if (!(t instanceof Tensor)) throw new Error(`${op}: ${name} must be a Tensor, got ${t === null ? "null" : typeof t}`);
}

function checkDevice(op: string, device: Device | undefined): void {
  if (device === undefined || device === "cpu") return;
  if (device === "cuda") {
    cudaAddon(op);
    return;
  }
  throw new Error(`${op}: unknown device ${String(device)}`);
}

/** A tensor holding a copy of data. number[] and mismatched typed arrays are converted. */
export function tensor(
  data: Float32Array | Float64Array | Int32Array | BigInt64Array | readonly number[],
  shape: readonly number[],
  opts: TensorOptions = {},
): Tensor {
  const s = checkShape("tensor", shape);
  checkDevice("tensor", opts.device);
  const dtype: DType =
    opts.dtype ??
    (data instanceof Float64Array ? "float64" : data instanceof Int32Array ? "int32" : data instanceof BigInt64Array ? "int64" : "float32");
  checkDtype("tensor", dtype);
  const n = s.reduce((a, b) => a * b, 1);
  if (data.length !== n) throw new Error(`tensor: data has ${data.length} elements but shape [${s.join(", ")}] holds ${n}`);
  let typed: Float32Array | Float64Array | Int32Array | BigInt64Array;
  switch (dtype) {
    case "float32":
    case "bfloat16":
      typed = data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>, Number);
      break;
    case "float64":
      typed = data instanceof Float64Array ? data : Float64Array.from(data as ArrayLike<number>, Number);
      break;
    case "int32":
      typed = data instanceof Int32Array ? data : Int32Array.from(data as ArrayLike<number>, Number);
      break;
    case "int64":
      typed = data instanceof BigInt64Array ? data : BigInt64Array.from(data as ArrayLike<number>, (v) => BigInt(v));
      break;
  }
  const device = opts.device ?? "cpu";
  return new Tensor(profiledCopy("tensor", device === "cuda", () => loadAddon().fromArray(dtypeCode[dtype], s, typed, deviceCode[device])), dtype, s);
}

export function zeros(shape: readonly number[], dtype: DType = "float32", device: Device = "cpu"): Tensor {
  const s = checkShape("zeros", shape);
  checkDtype("zeros", dtype);
  checkDevice("zeros", device);
  return new Tensor(profiledCopy("zeros", device === "cuda", () => loadAddon().zeros(dtypeCode[dtype], s, deviceCode[device])), dtype, s);
}

/** A tensor whose contents are unset: for a buffer an op will overwrite whole (matmulInto without accumulate). */
export function empty(shape: readonly number[], dtype: DType = "float32", device: Device = "cpu"): Tensor {
  const s = checkShape("empty", shape);
  checkDtype("empty", dtype);
  checkDevice("empty", device);
  return new Tensor(loadAddon().empty(dtypeCode[dtype], s, deviceCode[device]), dtype, s);
}

/**
 * Normal samples, the same for a given seed whatever the thread count and device (cuda
 * tensors are drawn on the host and copied).
 */
export function randn(shape: readonly number[], opts: { seed: number; std?: number; dtype?: DType; device?: Device }): Tensor {
  if (opts.device !== undefined && opts.device !== "cpu") {
    checkDevice("randn", opts.device);
    const host = randn(shape, { ...opts, device: "cpu" });
    try {
      return host.to(opts.device);
    } finally {
      host.dispose();
    }
  }
  const s = checkShape("randn", shape);
  const dtype = opts.dtype ?? "float32";
  if (dtype !== "float32" && dtype !== "float64" && dtype !== "bfloat16") throw new Error(`randn: dtype ${dtype} is not a float type`);
  if (!Number.isSafeInteger(opts.seed) || opts.seed < 0) throw new Error("randn: seed must be a non-negative safe integer");
  return new Tensor(loadAddon().randn(dtypeCode[dtype], s, opts.seed, opts.std ?? 1), dtype, s);
}

/** Converts to another dtype (to bfloat16: round to nearest even); on cuda, float32 <-> bfloat16. */
export function cast(t: Tensor, dtype: DType): Tensor {
  checkTensor("cast", "t", t);
  checkDtype("cast", dtype);
  const raw = t.device === "cuda" ? cudaFn("cast", "cast") : loadAddon().cast;
  return new Tensor(raw(t.handle("cast"), dtypeCode[dtype]), dtype, t.shape);
}

/** dst = cast(src, dst's dtype), on src's device (a compute copy refreshed from its master); no cast when the dtypes agree. */
export function castInto(dst: Tensor, src: Tensor): void {
  if (dst.dtype === src.dtype) return copyInto(dst, src);
  const c = cast(src, dst.dtype);
  try {
    copyInto(dst, c);
  } finally {
    c.dispose();
  }
}

/** dst <- src, same dtype and element count, between any two devices (a host batch into a device buffer). */
export function copyInto(dst: Tensor, src: Tensor): void {
  checkTensor("copyInto", "dst", dst);
  checkTensor("copyInto", "src", src);
  if (dst.dtype !== src.dtype || dst.numel !== src.numel) {
    throw new Error(`copyInto: dst ${dst} and src ${src} differ in dtype or size`);
  }
  const [d, h] = [dst.handle("copyInto", "dst"), src.handle("copyInto", "src")];
  profiledCopy("copyInto", dst.device === "cuda" || src.device === "cuda", () => loadAddon().copyInto(d, h));
}
