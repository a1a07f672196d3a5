// DeviceMesh: the one pure function that lays ranks out over the named dims and derives
// every group a rank takes part in. Every rank computes the same layout from the same
// config, and the coordinator hands it out, so no two ranks can disagree on a group.
//
// Layout: row-major over (dp, fsdp, sp) with sp innermost, so that a Ulysses group's
// all-to-all stays on consecutive ranks (one node) and FSDP groups come next.
//   rank = (dp_i * fsdp + fsdp_i) * sp + sp_i

export interface MeshShape {
  dp: number;
  fsdp: number;
  sp: number;
}

/** What the mesh must divide, where it matters (Ulysses shards heads over sp). */
export interface MeshModelLimits {
  numHeads?: number;
  numKvHeads?: number;
  /** Tokens per rank per micro-batch: a Ulysses group splits a packed batch of sp*T tokens. */
  tokensPerRank?: number;
}

export interface MeshCoord {
  dp: number;
  fsdp: number;
  sp: number;
}

export interface RankLayout {
  rank: number;
  coord: MeshCoord;
  /** Ranks that differ only in `sp`: a Ulysses group (same batch, sequence shards). */
  spGroup: number[];
  /** Ranks that differ only in `fsdp`. */
  fsdpGroup: number[];
  /** Ranks that differ only in `dp`: gradients are all-reduced over it. */
  dpGroup: number[];
  /** Ranks over which FSDP shards parameters, gradients and optimizer state: fsdp x sp. */
  shardGroup: number[];
  /** Which distinct batch stream this rank reads, and how many there are (dp * fsdp). */
  batchIndex: number;
  batchCount: number;
  /** Every rank: the loss is a mean over the tokens counted on all of them. */
  lossGroup: number[];
}

export class MeshError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MeshError";
  }
}

/** Resolves a config's shape (one dim may be -1) against the world size. */
export function resolveMeshShape(shape: MeshShape, worldSize: number): MeshShape {
  if (!Number.isInteger(worldSize) || worldSize < 1) throw new MeshError(`world size must be a positive integer, got ${worldSize}`);
  const dims = ["dp", "fsdp", "sp"] as const;
  const inferred = dims.filter((d) => shape[d] === -1);
  if (inferred.length > 1) throw new MeshError(`mesh: at most one of dp, fsdp, sp may be -1 (got ${inferred.join(", ")})`);
  for (const d of dims) {
    const v = shape[d];
    if (v !== -1 && (!Number.isInteger(v) || v < 1)) throw new MeshError(`mesh.${d} must be a positive integer or -1, got ${v}`);
  }
  const out = { ...shape };
  const known = dims.filter((d) => shape[d] !== -1).reduce((p, d) => p * shape[d], 1);
  const free = inferred[0];
  if (free) {
    if (worldSize % known !== 0) {
      throw new MeshError(`mesh: cannot infer ${free}: world size ${worldSize} is not divisible by the product of the other dims (${known})`);
    }
    out[free] = worldSize / known;
  }
  const product = out.dp * out.fsdp * out.sp;
  if (product !== worldSize) {
    throw new MeshError(`mesh: dp*fsdp*sp = ${out.dp}*${out.fsdp}*${out.sp} = ${product}, but the world size is ${worldSize}`);
  }
  return out;
}

/** Checks what the model and batch require of `sp`; each failure says why. */
export function checkMeshAgainstModel(shape: MeshShape, limits: MeshModelLimits): void {
  const { sp } = shape;
  if (sp === 1) return;
  if (limits.numHeads !== undefined && limits.numHeads % sp !== 0) {
    throw new MeshError(`mesh.sp=${sp}: Ulysses shards attention heads over sp, but num_attention_heads=${limits.numHeads} is not divisible by ${sp}`);
  }
  // With fewer KV heads than sp, each KV head is replicated sp/numKvHeads times instead of split.
  const kv = limits.numKvHeads;
  if (kv !== undefined && kv % sp !== 0 && sp % kv !== 0) {
    throw new MeshError(`mesh.sp=${sp}: num_key_value_heads=${kv} must divide or be divisible by sp so that KV heads shard or replicate evenly`);
  }
  if (limits.tokensPerRank !== undefined && limits.tokensPerRank % sp !== 0) {
    throw new MeshError(`mesh.sp=${sp}: tokens per rank (${limits.tokensPerRank}) must be divisible by sp so that a sequence shards evenly`);
  }
}

export class DeviceMesh {
  readonly shape: MeshShape;
  readonly worldSize: number;

  constructor(shape: MeshShape, worldSize: number, limits: MeshModelLimits = {}) {
    this.shape = resolveMeshShape(shape, worldSize);
    this.worldSize = worldSize;
    checkMeshAgainstModel(this.shape, limits);
  }

  rankOf(c: MeshCoord): number {
    const { fsdp, sp } = this.shape;
    return (c.dp * fsdp + c.fsdp) * sp + c.sp;
  }

  coordOf(rank: number): MeshCoord {
    if (!Number.isInteger(rank) || rank < 0 || rank >= this.worldSize) {
      throw new MeshError(`rank ${rank} is outside the mesh of ${this.worldSize} ranks`);
    }
    const { fsdp, sp } = this.shape;
    return { dp: Math.floor(rank / (fsdp * sp)), fsdp: Math.floor(rank / sp) % fsdp, sp: rank % sp };
  }

  /** The ranks that agree with `rank` on every dim except those in `free`, in rank order. */
  private group(rank: number, free: ReadonlyArray<keyof MeshCoord>): number[] {
    const c = this.coordOf(rank);
    const out: number[] = [];
    for (let r = 0; r < this.worldSize; r++) {
      const o = this.coordOf(r);
      if ((["dp", "fsdp", "sp"] as const).every((d) => free.includes(d) || o[d] === c[d])) out.push(r);
    }
    return out;
  }

  layout(rank: number): RankLayout {
    const coord = this.coordOf(rank);
    return {
      rank,
      coord,
      spGroup: this.group(rank, ["sp"]),
      fsdpGroup: this.group(rank, ["fsdp"]),
      dpGroup: this.group(rank, ["dp"]),
      shardGroup: this.group(rank, ["fsdp", "sp"]),
      batchIndex: coord.dp * this.shape.fsdp + coord.fsdp,
      batchCount: this.shape.dp * this.shape.fsdp,
      lossGroup: this.group(rank, ["dp", "fsdp", "sp"]),
    };
  }

  layouts(): RankLayout[] {
    return Array.from({ length: this.worldSize }, (_, r) => this.layout(r));
  }
}
