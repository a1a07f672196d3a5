// The public face of actors/: the Coordinator, Rank and Data actors that run a training
// job, their protocols, and the single-process job runner behind `tessera train`.
//
//   const run = await startTraining(loadConfig("configs/tiny.yaml"));
//   const summary = await run.done;        // { state: "done", step, tokens, last_loss, ... }
//
// startTraining(cfg, { transport }) runs the same job over another transport (NATS: a test
// does). Multi-rank jobs (launcher.ts) use these actors as they are: each rank process
// (rank-process.ts, spawned by its node's agent) serves a rankActor with its layout and
// parallel plan (mesh/: FSDP, DP, Ulysses over host collectives on NATS); node 0's launcher
// hosts the coordinator and data actors:
//
//   const job = await launch(cfg, { nnodes: 1, nodeRank: 0, nprocPerNode: 2 });
//   const summary = await job.done;
export { startTraining, ADDRESS, type TrainOptions, type TrainingRun } from "./job.ts";
export { coordinatorActor, type CoordinatorOptions } from "./coordinator-actor.ts";
export { rankActor, type RankActorOptions } from "./rank-actor.ts";
export { launch, type LaunchOptions, type LaunchedJob } from "./launcher.ts";
export { nodeAgent, threadsPerRank, type NodeAgentOptions } from "./node-agent.ts";
export { dataActor, concatBatches, padToMultiple, type DataActorOptions } from "./data-actor.ts";
export { createRankPlan, noCollectives, type RankPlan } from "./parallel-plan.ts";
export { resolveModelSpec, buildModel, tokenizerVocabSize, type ModelSpec } from "./model-spec.ts";
export { findResume, modelConfigJson, commitJobCheckpoint, type ResumePoint, type CommitInput } from "./checkpointing.ts";
export { MetricsFile, type MetricsRecord, type TrainRecord, type EvalRecord } from "./metrics.ts";
export { StepMetrics, stepFlops, modelShape, peakTflops, type ModelShape, type StepMetricsOptions } from "./step-metrics.ts";
export { Progress, formatProgress, formatDuration, type ProgressStream } from "./progress.ts";
export {
  CoordinatorProtocol,
  DataProtocol,
  RankProtocol,
  BatchSchema,
  type Batch,
  type StepInfo,
  type MicroResult,
  type OptimResult,
  type EvalResult,
  type RankStatus,
  ShardReportSchema,
  JobProtocol,
  NodeProtocol,
  type RunSummary,
} from "./protocols.ts";
export { commands } from "./cli.ts";
