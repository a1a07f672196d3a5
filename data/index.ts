// The public face of data/: sources ► tokenizer and chat templates ► packing ► resumable
// streams of packed batches.
//
// Batches are flat (tokens, positions restarting per sequence, cu_seqlens, labels). Labels are
// shifted for next-token prediction: labels[i] is the target of position i (tokens[i + 1] of
// the same sequence), -100 where there is no loss, and -100 at every sequence's last token;
// the model's loss is cross-entropy(logits[i], labels[i]) with no further shift.
//
// Use:
//   const p = await DataPipeline.open(options, { state });  // options: DataOptions (types.ts)
//   const batch = await p.next();        // this batch group's batch of the next step
//   const all = await p.nextGroup();     // or every batch group's (a central DataActor)
//   const saved = p.state();             // between batches; encodeState() for a checkpoint
//   await p.close();
// Data-parallel sharding: `shard: {index, count}` = (batch-group index, number of batch
// groups); every step yields `count` batches and group r gets the r-th, so shares are
// disjoint. Ranks of one sequence-parallel group pass the same index and get the same batch.
export { DataPipeline, type OpenOptions } from "./pipeline.ts";
export {
  previewBatches,
  previewJson,
  BRACKETS,
  ANSI,
  type Preview,
  type PreviewBatch,
  type PreviewSequence,
  type Marks,
} from "./preview.ts";
export { TesseraTokenizer, IGNORE_INDEX } from "./tokenizer.ts";
export { encodeState, decodeState, stateToJSON, stateFromJSON } from "./state.ts";
export { loadDatasetYaml, sourceSpecs } from "./dataset.ts";
export { resolveSource, readSource, csvRows, type ResolvedSource } from "./sources/index.ts";
export { toRecord } from "./records.ts";
export { Packer } from "./packer.ts";
export { DataError, describeLocation } from "./errors.ts";
export type * from "./types.ts";
