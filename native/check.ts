// Precondition checks shared by the ops: every failure is an Error naming the op and the problem.
import { Tensor } from "./tensor.ts";
import type { DType } from "./dtype.ts";

export function fail(op: string, problem: string): never {
  throw new Error(`${op}: ${problem}`);
}

export function fmt(shape: readonly (number | string)[]): string {
  return `[${shape.join(", ")}]`;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** t must be a live Tensor (not disposed, not some other value). */
export function needLive(op: string, name: string, t: Tensor): void {
  if (!(t instanceof Tensor)) fail(op, `${name} must be a Tensor, got ${t === null ? "null" : typeof t}`);
  t.handle(op, name);
}

/**
 * The tensor must be of a float dtype its device computes in: float32 or float64 on the CPU,
 * float32 or bfloat16 (storage; fp32 arithmetic) on cuda.
 */
export function needFloat(op: string, name: string, t: Tensor): void {
  needLive(op, name, t);
  if (t.device === "cuda") {
    if (t.dtype !== "float32" && t.dtype !== "bfloat16") fail(op, `${name} must be float32 or bfloat16 on cuda, got ${t.dtype}`);
    return;
  }
  if (t.dtype !== "float32" && t.dtype !== "float64") {
    fail(op, `${name} must be float32 or float64, got ${t.dtype}${t.dtype === "bfloat16" ? " (cast it to float32 first)" : ""}`);
  }
}

/** Ops that have no cuda kernel yet say so rather than reading device memory on the host. */
export function needCpu(op: string, ...inputs: [string, Tensor][]): void {
  for (const [name, t] of inputs) {
    needLive(op, name, t);
    if (t.device !== "cpu") fail(op, `${name} is on ${t.device}, and ${op} has no ${t.device} kernel yet (move it with .to("cpu"))`);
  }
}

export function needDtype(op: string, name: string, t: Tensor, dtype: DType): void {
  needLive(op, name, t);
  if (t.dtype !== dtype) fail(op, `${name} must be ${dtype}, got ${t.dtype}`);
}

export function needSameDtype(op: string, ref: [string, Tensor], ...others: [string, Tensor][]): void {
  for (const [name, t] of others) {
    needLive(op, name, t);
    if (t.dtype !== ref[1].dtype) fail(op, `${name} is ${t.dtype} but ${ref[0]} is ${ref[1].dtype}`);
  }
}

/** Shape check; -1 in `want` matches any size. */
export function needShape(op: string, name: string, t: Tensor, want: readonly number[]): void {
  needLive(op, name, t);
  const ok = t.shape.length === want.length && want.every((d, i) => d === -1 || d === t.shape[i]);
  if (!ok) fail(op, `${name} must have shape ${fmt(want.map((d) => (d === -1 ? "*" : d)))}, got ${fmt(t.shape)}`);
}

export function needRank(op: string, name: string, t: Tensor, ranks: number[]): void {
  needLive(op, name, t);
  if (!ranks.includes(t.shape.length)) fail(op, `${name} must be ${ranks.join("-D or ")}-D, got ${fmt(t.shape)}`);
}

export function needSameShape(op: string, a: [string, Tensor], b: [string, Tensor]): void {
  needLive(op, a[0], a[1]);
  needLive(op, b[0], b[1]);
  if (!sameShape(a[1].shape, b[1].shape)) fail(op, `${a[0]} ${fmt(a[1].shape)} and ${b[0]} ${fmt(b[1].shape)} differ in shape`);
}

export function needFinite(op: string, name: string, v: number): void {
  if (typeof v !== "number" || !Number.isFinite(v)) fail(op, `${name} must be a finite number, got ${String(v)}`);
}
