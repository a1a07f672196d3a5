// The public face of models/optim: optimizers (AdamW; Muon with AdamW), their state for
// checkpoints, gradient clipping and LR schedules. Kernels are native/'s; this holds the
// state, the routing of parameters, and the rules:
// - weight decay on parameters of 2 or more dimensions only (rules.ts noDecay);
// - Muon on 2-D hidden matrices, AdamW on embeddings, the LM head, norms and biases
//   (rules.ts usesMuon), one lr and weight decay for both;
// - schedules indexed by the step about to be taken, warmup (s+1)/W, cosine to min_lr at
//   the last step, WSD with a 1-sqrt cooldown (schedule.ts).
// A trainer step: clipGradNorm -> skip when !finite -> opt.step(schedule(opt.stepCount)) -> zeroGrad.
export type { OptimParam, Optimizer, PreparedStep, OptimizerStateDict, OptimizerStateSource, BufferSource, ParamState, Algorithm, ParamPredicate } from "./types.ts";
export { materializeState } from "./param-optimizer.ts";
export { AdamW, type AdamWOptimizerOptions } from "./adamw.ts";
export { MuonWithAdamW, type MuonOptimizerOptions } from "./muon.ts";
export { createOptimizer, type CreateOptimizerOptions } from "./create.ts";
export { noDecay, usesMuon, isEmbeddingOrHead } from "./rules.ts";
export { clipGradNorm, gradNorm, gradSumSquares, gradSumSquaresQueued, zeroGrad, type ClipResult } from "./clip.ts";
export { createSchedule, type LrSchedule, type ScheduleTarget } from "./schedule.ts";
