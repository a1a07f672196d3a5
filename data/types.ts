// Shared shapes of the data pipeline: options, records, positions, batches, state, stats.

export type SourceFormat = "jsonl" | "json" | "csv" | "arrow" | "parquet";
export type PackingStrategy = "ffd" | "best_fit" | "balanced";

/** One entry of a dataset YAML (snake_case: it is written by people in YAML). */
export interface SourceSpec {
  path: string;
  /** Inferred from the extension (or folder contents) when absent. */
  format?: SourceFormat;
  /** Mixing ratio; weights are normalised over the sources. Default 1. */
  weight?: number;
  /** For HF `save_to_disk` DatasetDict folders and split-named files: which split to read. */
  split?: string;
  text_field?: string;
  messages_field?: string;
}

/**
 * What the pipeline needs; the job config's `data` section maps onto this. Exactly one of
 * `sources`, `dataset` (a dataset YAML) or `path` (a single file or folder) names the data.
 */
export interface DataOptions {
  sources?: SourceSpec[];
  dataset?: string;
  path?: string;
  /** Folder with tokenizer.json + tokenizer_config.json (HF layout). */
  tokenizer: string;
  /** Token budget of one packed micro-batch on one rank. */
  packingLength: number;
  packingStrategy?: PackingStrategy;
  /** Records gathered before packing (and shuffled together). Default 1024. */
  shuffleWindow?: number;
  onOverlong?: "truncate" | "drop";
  onBadRecord?: "skip" | "fail";
  /** Tokenizer worker threads; 0 or 1 tokenizes inline. */
  workers?: number;
  seed?: number;
  /** Start each source again when it ends (epochs); otherwise the stream ends. Default true. */
  repeat?: boolean;
  /** Image/audio/video parts are kept for multimodal models and are bad records otherwise. */
  multimodal?: boolean;
  /** This consumer's batch group (a data-parallel group) and the number of groups. */
  shard?: { index: number; count: number };
  /** Bad records kept in the stats' list (all are counted). Default 100. */
  badRecordListLimit?: number;
}

export type Role = "system" | "user" | "assistant" | "tool";
export interface TextPart {
  type: "text";
  text: string;
}
/** image / image_url / audio / input_audio / video parts: kept as they came. */
export interface MediaPart {
  type: string;
  [key: string]: unknown;
}
export type ContentPart = TextPart | MediaPart;
export interface ChatMessage {
  role: Role;
  content: string | ContentPart[];
  [key: string]: unknown;
}

export type DataRecord = { kind: "text"; text: string } | { kind: "chat"; messages: ChatMessage[] };

/** Where a record came from, for reports: a line (text formats) or a row (columnar formats). */
export interface RecordLocation {
  file: string;
  line?: number;
  row?: number;
}

/** Where a source's reading resumes: the file (index in the source's file list), a byte
 *  offset (text formats) and the number of the next line (text) or row (columnar). */
export interface SourcePosition {
  file: number;
  offset: number;
  row: number;
}

export interface SourceCursor {
  position: SourcePosition;
  epoch: number;
  done: boolean;
}

/** The reading side's full state after some record: every source and the mixer. */
export interface StreamCursor {
  sources: SourceCursor[];
  rng: number;
}

export interface BadRecord extends RecordLocation {
  reason: string;
}

/** A record after tokenization. labels[i] is the target of position i (the next token), -100
 *  where there is no loss, and always -100 at the record's last token. */
export interface TokenizedRecord {
  tokens: Int32Array;
  labels: Int32Array;
  where: RecordLocation;
}

/** One packed micro-batch, flat: no padding. */
export interface PackedBatch {
  tokens: Int32Array;
  /** Restart at 0 for each sequence. */
  positions: Int32Array;
  /** Sequence boundaries: B+1 entries from 0 to T. */
  cu_seqlens: Int32Array;
  labels: Int32Array;
}

export interface DataStats {
  records: number;
  bad: number;
  /** The first `badRecordListLimit` bad records. */
  bad_records: BadRecord[];
  truncated: number;
  /** Records dropped as too long (on_overlong: drop); also listed as bad records. */
  dropped: number;
  /** Records left at the end of non-repeating data that filled no complete batch group. */
  tail_records: number;
  batches: number;
  tokens: number;
  /** Tokens with a label (not -100). */
  loss_tokens: number;
  /** tokens / (batches × packing length). */
  fill: number;
}

export interface PackerState {
  buffer: TokenizedRecord[];
  queue: PackedBatch[];
  rng: number;
}

/** Everything a resume needs; plain data (typed arrays inside), msgpack- and JSON-friendly
 *  through `stateToJSON`. */
export interface DataState {
  version: 1;
  cursor: StreamCursor;
  packer: PackerState;
  stats: DataStats;
  /** Records consumed by the packer so far. */
  consumed: number;
  /** The budget the packed batches in the state were made for. */
  packingLength: number;
}
