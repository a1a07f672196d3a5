// The optimizer of one rank over what its plan gives it. Whole parameters (one rank, DP) take
// models/optim's optimizer as it is. Sharded parameters take AdamW over their shards; Muon's
// matrices need the whole matrix for Newton-Schulz, so with `optimizer.name: muon` they go
// to the plan's ShardedMuon (a collective step) and the rest to AdamW, as MuonWithAdamW
// splits them on one rank. Either way the state is models/optim's OptimizerStateDict over
// this rank's ranges, so checkpoints save and reshard it alike.
import { createOptimizer, materializeState, noDecay, usesMuon, type OptimizerStateDict, type OptimizerStateSource, type ParamState } from "../models/optim/index.ts";
import type { ParallelPlan } from "../mesh/index.ts";
import { scaleInPlace } from "../native/index.ts";
import type { JobConfig } from "../runtime/index.ts";

/** A rank's optimizer step ready to run: models/optim's PreparedStep, or sharded Muon's collective step (asynchronous). */
export interface PreparedRankStep {
  apply(gradScale?: number): void | Promise<void>;
  drop(): void;
}

export interface RankOptimizer {
  /** Optimizer steps taken so far (what the LR schedule is indexed by). */
  readonly stepCount: number;
  /**
   * One update with learning rate `lr` in two halves (see models/optim's prepareStep): checks
   * now, the update at `apply`, gradients multiplied by its gradScale (clipping's factor); every
   * rank of the shard group must apply it (sharded Muon exchanges matrices).
   */
  prepareStep(lr: number): PreparedRankStep;
  /** This rank's state over its ranges. */
  stateDict(): OptimizerStateDict;
  /** The same, each buffer read when a checkpoint writer reaches it (sharded Muon's momentum, host arrays already, comes as values). */
  stateSource(): OptimizerStateSource;
  /** Replaces the state with a checkpoint's, over this rank's ranges. */
  loadStateDict(state: OptimizerStateDict): void;
  dispose(): void;
}

export function createRankOptimizer(cfg: Pick<JobConfig, "optimizer">, plan: ParallelPlan): RankOptimizer {
  // Shards are flat: decay and routing rules must see the logical shapes.
  const shapeOf = (n: string) => plan.logicalShape(n);
  const decayRule = { noDecay: (n: string) => noDecay(n, shapeOf(n)) };
  // Taken once, as the optimizers keep them: the plan makes its shards (or holds the whole
  // parameters) once and updates them in place, and each view reads its gradient when asked.
  const params = plan.rankParams();
  const c = cfg.optimizer;
  const muon =
    c.name === "muon"
      ? plan.createShardedMuon({
          usesMuon: (n) => usesMuon(n, shapeOf(n)),
          noDecay: (n) => noDecay(n, shapeOf(n)),
          momentum: c.muon.momentum,
          nesterov: c.muon.nesterov,
          nsSteps: c.muon.ns_steps,
          weightDecay: c.weight_decay,
        })
      : undefined;
  if (!muon) {
    const opt = createOptimizer(c, params, decayRule);
    return {
      get stepCount() {
        return opt.stepCount;
      },
      prepareStep: (lr) => opt.prepareStep(lr),
      stateDict: () => opt.stateDict(),
      stateSource: () => opt.stateSource(),
      loadStateDict: (s) => opt.loadStateDict(s),
      dispose: () => opt.dispose(),
    };
  }
  const adamw = createOptimizer({ ...c, name: "adamw" }, params.filter((p) => !muon.has(p.name)), decayRule);
  const split = (s: OptimizerStateDict) => {
    const rest: Record<string, ParamState> = {};
    for (const [name, ps] of Object.entries(s.params)) if (!muon.has(name)) rest[name] = ps;
    return { step: s.step, params: rest };
  };
  const step = async (lr: number, gradScale = 1) => {
    // Sharded Muon exchanges gradients as they are: scale them all first.
    if (gradScale !== 1) for (const p of params) if (p.grad) scaleInPlace(p.grad, gradScale);
    await muon.step(lr);
    adamw.step(lr);
  };
  return {
    get stepCount() {
      return adamw.stepCount;
    },
    // Sharded Muon's step is a collective: nothing of it is prepared ahead.
    prepareStep: (lr) => ({ apply: (gradScale) => step(lr, gradScale), drop() {} }),
    stateSource: () => {
      const s = adamw.stateSource();
      return { step: s.step, params: { ...s.params, ...muon.stateDict() } };
    },
    stateDict() {
      return materializeState(this.stateSource());
    },
    loadStateDict(s) {
      adamw.loadStateDict(split(s));
      muon.loadStateDict(s.params);
    },
    dispose: () => adamw.dispose(),
  };
}
