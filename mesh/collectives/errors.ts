// Errors of the collectives. Each names the group, the op and the sequence number, so a
// failed step's log says which collective of which group broke, and on which rank.

export type CollectiveErrorCode = "TIMEOUT" | "MISMATCH" | "ABORTED" | "INVALID" | "SEND_FAILED";

export interface CollectiveErrorInfo {
  /** Group name, e.g. `dp[0,4]`. */
  readonly group: string;
  /** The call on this rank, e.g. `allReduce(sum) float32[1024]`. */
  readonly call: string;
  readonly seq: number;
  /** The rank that raised the error. */
  readonly rank: number;
}

export class CollectiveError extends Error {
  constructor(
    readonly code: CollectiveErrorCode,
    readonly info: CollectiveErrorInfo,
    detail: string,
  ) {
    super(`collective #${info.seq} ${info.call} on group ${info.group} at rank ${info.rank}: ${detail}`);
    this.name = new.target.name;
  }
}

/** Some members did not arrive within the deadline. */
export class CollectiveTimeoutError extends CollectiveError {
  constructor(
    info: CollectiveErrorInfo,
    readonly timeoutMs: number,
    /** Ranks this one was still waiting for. */
    readonly missing: readonly number[],
    /** Ranks whose endpoint nobody served when this one last tried to send them a block. */
    readonly unreachable: readonly number[] = [],
  ) {
    const unserved = unreachable.length ? ` (no endpoint serves rank(s) ${unreachable.join(", ")})` : "";
    super("TIMEOUT", info, `timed out after ${timeoutMs} ms waiting for rank(s) ${missing.join(", ")}${unserved}`);
  }
}

/** Another member called a different collective (or length, dtype, root) at the same sequence number. */
export class CollectiveMismatchError extends CollectiveError {
  constructor(
    info: CollectiveErrorInfo,
    readonly otherRank: number,
    readonly otherCall: string,
  ) {
    super("MISMATCH", info, `rank ${otherRank} called ${otherCall} at the same sequence number`);
  }
}

/** `abort()` was called (the coordinator restarts the ranks), or the endpoint was closed. */
export class CollectiveAbortedError extends CollectiveError {
  constructor(info: CollectiveErrorInfo, reason: string) {
    super("ABORTED", info, `aborted: ${reason}`);
  }
}
