// Tensors to and from the host buffers the host collectives carry. The NCCL backend will
// move device tensors directly; these copies are the CPU path's whole cost of communication.
import { tensor, type DType, type Tensor } from "../../native/index.ts";
import type { FloatBuffer } from "./types.ts";

export function floatArray(dtype: DType, n: number): FloatBuffer {
  if (dtype === "float64") return new Float64Array(n);
  if (dtype === "float32") return new Float32Array(n);
  throw new Error(`parallel plans: ${dtype} tensors are not supported (float32 or float64)`);
}

export function hostOf(t: Tensor): FloatBuffer {
  const a = t.toArray();
  if (a instanceof Float32Array || a instanceof Float64Array) return a;
  throw new Error(`parallel plans: ${t.dtype} tensors are not supported (float32 or float64)`);
}

export function tensorOf(a: FloatBuffer, shape: readonly number[], dtype: DType): Tensor {
  return tensor(a, shape, { dtype });
}
