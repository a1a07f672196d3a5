// A model's parameters by plan unit: one per decoder block, and "outer" for the rest
// (embeddings, final norm, head: in use from the first forward to the last backward).
import type { PlanModel, PlanParam } from "./types.ts";

export type UnitId = number | "outer";

export interface Units {
  blocks: PlanParam[][];
  outer: PlanParam[];
}

export function unitsOf(model: PlanModel): Units {
  const blocks = model.blocks.map((b) => b.params());
  const inBlocks = new Set(blocks.flat());
  return { blocks, outer: model.params().filter((p) => !inBlocks.has(p)) };
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
