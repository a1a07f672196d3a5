// The public face of models/checkpoint: sharded, atomic, resumable checkpoints.
//
// Layout of a checkpoint root (config `checkpoint.dir`):
//   step-000120/manifest.json          written last by rank 0: step, tokens, mesh, job config,
//                                      data and RNG state, optimizer scalars, and per tensor
//                                      its shape and which rank's file holds which flat range
//   step-000120/rank-00000.safetensors each rank's fp32 shards: parameters by their names,
//                                      optimizer buffers as optim.<param>.<buffer>
//   step-000130.tmp-<hex>/             a save in progress (or crashed): never read, removed
//                                      by the next save
//   latest                             the name of the newest complete checkpoint
//
// Save (the coordinator drives it through the actors): beginCheckpoint on rank 0, then
// writeRankShard on every rank into the folder it returns, then on rank 0, with every
// rank's report, commitCheckpoint(dir, buildManifest(meta, reports), { keepLast }).
// saveCheckpoint runs the three in one process. Each shard is written in one pass, its sha256
// taken of the bytes going out; `verify: "local"` (commit, open) re-reads only the shards this
// process did not write or hash itself, "full" (the default) re-reads all.
// Load: openCheckpoint(dir or root), then ckpt.loadShard(name, range) /
// ckpt.loadOptimizerState(targets) with the ranges of the loading mesh (any mesh: ranges are
// flat element ranges). resolveResume implements `checkpoint.resume`; exportHF writes a
// Hugging Face folder.
//
// The root must be storage every rank sees (one node, or a shared file system): ranks write
// their shards into rank 0's folder. The commit point is the folder's rename; `latest` moves
// just after it, so a crash between the two leaves `latest` on the previous checkpoint, which
// is still whole.
export {
  beginCheckpoint,
  writeRankShard,
  buildManifest,
  commitCheckpoint,
  saveCheckpoint,
  cleanLeftovers,
  prune,
  type TensorShard,
  type RankShardInput,
  type RankShardReport,
  type CheckpointMeta,
  type CommitOptions,
  type SaveOptions,
} from "./write.ts";
export { Checkpoint, openCheckpoint, loadShard, resolveCheckpointDir, type OpenOptions, type OptimizerTarget } from "./read.ts";
export { resolveResume, type ResumeOptions } from "./resume.ts";
export { knownUnder, vouch, type HashRecord } from "./hashed-here.ts";
export { wholeModelShard, loadWholeModel } from "./model-state.ts";
export { exportHF, type ExportOptions } from "./export-hf.ts";
export { flatShardRange, rowShardRange, wholeRange, type ShardRange } from "./shard-spec.ts";
export { listComplete, stepDirName, LATEST_FILE, type CheckpointListing } from "./layout.ts";
export {
  MANIFEST_FILE,
  FORMAT_VERSION,
  optimTensorName,
  parseManifest,
  type CheckpointManifest,
  type TensorEntry,
  type ShardPiece,
  type FileEntry,
  type OptimizerScalars,
} from "./manifest.ts";
export { toTaggedJSON, fromTaggedJSON } from "./tagged-json.ts";
