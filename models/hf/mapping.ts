// Our parameters <-> the tensors of HF checkpoints. Most are the same tensor under the same
// name; GPT-2's Conv1D weights are stored transposed ([in, out]) and its c_attn fuses the
// q, k and v projections along the output dimension.
import { ops, type Tensor } from "../ops.ts";
import type { HFTensor } from "../causal-lm.ts";
import type { Param } from "../layers/param.ts";

export function toFloat32(t: Tensor): Float32Array {
  const a = t.toArray();
  if (a instanceof Float32Array) return a;
  if (a instanceof Float64Array) return Float32Array.from(a);
  throw new Error(`expected a float tensor, got ${t.dtype}`);
}

function gradOf(p: Param): Float32Array {
  return p.grad ? toFloat32(p.grad) : new Float32Array(p.value.numel);
}

function upload(p: Param, data: Float32Array, shape: readonly number[] = p.shape): void {
  p.set(ops.tensor(data, shape, { dtype: p.dtype }));
}

/** The same tensor under the same name. */
export function direct(p: Param, name = p.name): HFTensor {
  return {
    name,
    shape: p.shape,
    read: () => toFloat32(p.master),
    readGrad: () => gradOf(p),
    write: (d) => upload(p, d),
  };
}

/**
 * Linear weights [out_i, in] stored as one Conv1D weight [in, sum out_i] (GPT-2): one part
 * for c_proj/c_fc, three (q, k, v) for c_attn.
 */
export function conv1dWeight(name: string, parts: readonly Param[]): HFTensor {
  const inF = parts[0]!.shape[1]!;
  const outs = parts.map((p) => p.shape[0]!);
  const total = outs.reduce((a, b) => a + b, 0);
  const gather = (get: (p: Param) => Float32Array) => {
    const out = new Float32Array(inF * total);
    let off = 0;
    parts.forEach((p, k) => {
      const w = get(p); // [out_k, in]
      const o = outs[k]!;
      for (let j = 0; j < o; j++) for (let i = 0; i < inF; i++) out[i * total + off + j] = w[j * inF + i]!;
      off += o;
    });
    return out;
  };
  return {
    name,
    shape: [inF, total],
    read: () => gather((p) => toFloat32(p.master)),
    readGrad: () => gather(gradOf),
    write: (d) => {
      let off = 0;
      parts.forEach((p, k) => {
        const o = outs[k]!;
        const w = new Float32Array(o * inF);
        for (let j = 0; j < o; j++) for (let i = 0; i < inF; i++) w[j * inF + i] = d[i * total + off + j]!;
        upload(p, w);
        off += o;
      });
    },
  };
}

/** Biases [out_i] stored end to end (GPT-2 c_attn.bias). */
export function concatBias(name: string, parts: readonly Param[]): HFTensor {
  const sizes = parts.map((p) => p.shape[0]!);
  const total = sizes.reduce((a, b) => a + b, 0);
  const gather = (get: (p: Param) => Float32Array) => {
    const out = new Float32Array(total);
    let off = 0;
    parts.forEach((p) => {
      const b = get(p);
      out.set(b, off);
      off += b.length;
    });
    return out;
  };
  return {
    name,
    shape: [total],
    read: () => gather((p) => toFloat32(p.master)),
    readGrad: () => gather(gradOf),
    write: (d) => {
      let off = 0;
      parts.forEach((p, k) => {
        upload(p, d.slice(off, off + sizes[k]!));
        off += sizes[k]!;
      });
    },
  };
}
