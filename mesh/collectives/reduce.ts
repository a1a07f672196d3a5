// Deterministic element-wise reductions on host buffers.
//
// Sums (and avg) accumulate in float64 in the order the parts are given (group order), and
// are rounded to the buffer's type once at the end. So for float32 the result is the float64
// sum rounded once, which is usually more accurate than, and not bitwise equal to, a float32
// sum (NCCL's); what matters here is that it never depends on message arrival order. For
// int32 the float64 sum is exact up to 2^53 and is then wrapped modulo 2^32 when stored,
// like two's-complement int32 addition. max and min are exact in any order (NaN propagates).
import type { HostBuffer, ReduceOp } from "./types.ts";

export type HostDType = "float32" | "float64" | "int32";

export function dtypeOf(buf: HostBuffer): HostDType {
  if (buf instanceof Float32Array) return "float32";
  if (buf instanceof Float64Array) return "float64";
  if (buf instanceof Int32Array) return "int32";
  throw new TypeError(`collectives take Float32Array, Float64Array or Int32Array, got ${describe(buf)}`);
}

function describe(v: unknown): string {
  return v === null || typeof v !== "object" ? String(v) : ((v as object).constructor?.name ?? "an object");
}

/** A fresh zeroed buffer of the same type as `buf`. */
export function like<T extends HostBuffer>(buf: T, length: number): T {
  return new (buf.constructor as new (n: number) => T)(length);
}

/** Reduces `parts` (each as long as `out`), in the order given, into `out`. */
export function reduceInOrder(parts: readonly HostBuffer[], op: ReduceOp, out: HostBuffer): void {
  const first = parts[0];
  if (first === undefined) throw new Error("reduceInOrder: no parts");
  const n = out.length;
  if (op === "max" || op === "min") {
    const pick = op === "max" ? Math.max : Math.min;
    out.set(first);
    for (let k = 1; k < parts.length; k++) {
      const p = parts[k]!;
      for (let i = 0; i < n; i++) out[i] = pick(out[i]!, p[i]!);
    }
    return;
  }
  // Starting from a copy of the first part (not from zeros) keeps -0 + -0 = -0.
  const acc = new Float64Array(n);
  acc.set(first);
  for (let k = 1; k < parts.length; k++) {
    const p = parts[k]!;
    for (let i = 0; i < n; i++) acc[i]! += p[i]!;
  }
  if (op === "avg") {
    const count = parts.length;
    for (let i = 0; i < n; i++) acc[i]! /= count;
  }
  out.set(acc);
}
