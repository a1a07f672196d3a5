// A single rank that holds whole parameters (world 1, or DP replicas): its shard input from
// the model and optimizer, and loading both back. Sharded ranks build RankShardInput from
// their plan's ranges instead.
import type { Param } from "../layers/param.ts";
import { toFloat32 } from "../hf/mapping.ts";
import { ops } from "../ops.ts";
import type { Optimizer } from "../optim/index.ts";
import type { Checkpoint } from "./read.ts";
import type { RankShardInput } from "./write.ts";

/** Whole parameters and the optimizer's state buffers, each read when the writer reaches it. */
export function wholeModelShard(params: readonly Param[], optimizer?: Optimizer): RankShardInput {
  return {
    tensors: params.map((p) => ({ name: p.name, shape: p.shape, data: () => toFloat32(p.master) })),
    ...(optimizer ? { optimizer: optimizer.stateSource() } : {}),
  };
}

/**
 * Sets every parameter from the checkpoint (in its own dtype) and, when given, the
 * optimizer's state; everything is read and checked before any parameter changes. Returns
 * the model tensors of the checkpoint that no parameter took.
 */
export async function loadWholeModel(ckpt: Checkpoint, params: readonly Param[], optimizer?: Optimizer): Promise<string[]> {
  const values: Float32Array[] = [];
  for (const p of params) {
    const e = ckpt.manifest.tensors[p.name];
    if (!e) throw new Error(`checkpoint: ${ckpt.dir} lacks parameter ${p.name}`);
    if (e.shape.join() !== p.shape.join()) throw new Error(`checkpoint: tensor ${p.name} is [${e.shape.join(", ")}] in ${ckpt.dir}, the parameter [${p.shape.join(", ")}]`);
    values.push(await ckpt.loadShard(p.name));
  }
  const state = optimizer ? await ckpt.loadOptimizerState(Object.fromEntries(params.map((p) => [p.name, {}]))) : undefined;
  // The optimizer validates all of its state before taking any (shapes are the parameters', which set() keeps).
  if (state) optimizer!.loadStateDict(state);
  params.forEach((p, i) => p.set(ops.tensor(values[i]!, p.shape, { dtype: p.dtype })));
  const taken = new Set(params.map((p) => p.name));
  return ckpt.names().filter((n) => !taken.has(n));
}
