// The public face of runtime/config: the job config schema, its types, and the loader.
export { JobConfigSchema, natsServers } from "./schema.ts";
export type {
  JobConfig,
  JobConfigInput,
  ModelSection,
  HfModelConfigFields,
  DataSection,
  DataSource,
  EvalSection,
  MeshSection,
  OptimizerSection,
  ScheduleSection,
  MuonSection,
  TrainerSection,
  CheckpointSection,
  TelemetrySection,
  NatsSection,
} from "./schema.ts";
export { loadConfig, parseConfig, type LoadOptions } from "./load.ts";
export { ConfigError, formatProblem, type ConfigProblem } from "./problems.ts";
