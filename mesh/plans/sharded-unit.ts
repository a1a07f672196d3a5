// One FSDP unit (a decoder block, or the outer parameters): each parameter split into flat
// element ranges over the shard group with models/checkpoint's ceil split (flatShardRange:
// shard j holds [j*ceil(n/k), (j+1)*ceil(n/k)) clipped to n, so checkpoints store these
// ranges as they are). Collectives move the whole unit at once: member j's part of the
// wire buffer is, per parameter in order, its range padded to ceil(n/k), so one all-gather
// rebuilds every parameter and one reduce-scatter leaves each member the sum of its ranges.
import { addInto, copyInto, keep, type DType, type Tensor } from "../../native/index.ts";
import type { Collectives, HostBuffer } from "../collectives/index.ts";
import { floatArray, hostOf, tensorOf } from "./host-tensors.ts";
import type { FloatBuffer, ShardRange, ParamPiece, PlanParam, RankParam, ShardReader } from "./types.ts";
import { numel } from "./units.ts";

/** Shard `index` of `count` of n elements: ceil(n / count) each, the last ones shorter or empty (= models/checkpoint flatShardRange). */
export function flatShardRange(n: number, index: number, count: number): ShardRange {
  const per = Math.ceil(n / count);
  return { start: Math.min(n, index * per), end: Math.min(n, (index + 1) * per) };
}

export class ShardedUnit {
  private readonly k: number;
  private readonly me: number;
  private readonly dtype: DType;
  /** Offset of each parameter in a member's part of the wire buffer, and that part's length. */
  private readonly offsets: number[] = [];
  private readonly partLength: number;
  /** This rank's shard of each parameter (undefined where its range is empty). */
  private readonly shards: (Tensor | undefined)[];
  private readonly shardGrads: (Tensor | undefined)[];

  /** Takes this rank's ranges of the (identical on every member) whole values, then releases them. */
  constructor(
    readonly params: readonly PlanParam[],
    private readonly group: Collectives<HostBuffer>,
  ) {
    this.k = group.ranks.length;
    this.me = group.index;
    const dtypes = new Set(params.map((p) => p.dtype));
    if (dtypes.size > 1) throw new Error(`FSDP: a unit's parameters must share a dtype, got ${[...dtypes].join(", ")}`);
    this.dtype = params[0]?.dtype ?? "float32";
    let off = 0;
    for (const p of params) {
      this.offsets.push(off);
      off += Math.ceil(numel(p.shape) / this.k);
    }
    this.partLength = off;
    this.shards = params.map((p) => {
      const r = this.range(p, this.me);
      const shard = r.end > r.start ? keep(tensorOf(hostOf(p.value).slice(r.start, r.end), [r.end - r.start], this.dtype)) : undefined;
      p.release();
      return shard;
    });
    this.shardGrads = params.map(() => undefined);
  }

  range(p: PlanParam, member: number): ShardRange {
    return flatShardRange(numel(p.shape), member, this.k);
  }

  get held(): boolean {
    return this.params.every((p) => p.held);
  }

  /** Elements of parameter values this rank holds now (shards, plus whole values while gathered). */
  heldElements(): number {
    let n = 0;
    for (const s of this.shards) n += s?.numel ?? 0;
    for (const p of this.params) if (p.held) n += numel(p.shape);
    return n;
  }

  /** All-gathers the unit and sets every parameter's whole value. */
  async gather(): Promise<void> {
    const part = floatArray(this.dtype, this.partLength);
    this.params.forEach((_, i) => {
      const s = this.shards[i];
      if (s) part.set(hostOf(s), this.offsets[i]!);
    });
    const all = (await this.group.allGather(part)) as FloatBuffer;
    this.params.forEach((p, i) => {
      const whole = floatArray(this.dtype, numel(p.shape));
      for (let j = 0; j < this.k; j++) {
        const r = this.range(p, j);
        const at = j * this.partLength + this.offsets[i]!;
        whole.set(all.subarray(at, at + r.end - r.start), r.start);
      }
      p.set(tensorOf(whole, p.shape, this.dtype));
    });
  }

  release(): void {
    for (const p of this.params) p.release();
  }

  /** Reduce-scatters the whole gradients into this rank's shard gradients (added to them) and drops the whole ones. */
  async reduceGrads(): Promise<void> {
    const buf = floatArray(this.dtype, this.k * this.partLength);
    this.params.forEach((p, i) => {
      const g = p.grad;
      if (!g) return;
      const h = hostOf(g);
      for (let j = 0; j < this.k; j++) {
        const r = this.range(p, j);
        buf.set(h.subarray(r.start, r.end), j * this.partLength + this.offsets[i]!);
      }
      p.zeroGrad();
    });
    const mine = (await this.group.reduceScatter(buf, "sum")) as FloatBuffer;
    this.params.forEach((p, i) => {
      const r = this.range(p, this.me);
      if (r.end === r.start) return;
      const at = this.offsets[i]!;
      const g = tensorOf(mine.slice(at, at + r.end - r.start), [r.end - r.start], this.dtype);
      const acc = this.shardGrads[i];
      if (acc) {
        addInto(acc, g);
        g.dispose();
      } else {
        this.shardGrads[i] = keep(g);
      }
    });
  }

  /** The shard gradients, packed in parameter order (zeros where none yet): for the dp all-reduce. */
  packGrads(): FloatBuffer {
    const out = floatArray(this.dtype, this.shardLength());
    let at = 0;
    this.params.forEach((p, i) => {
      const r = this.range(p, this.me);
      const g = this.shardGrads[i];
      if (g) out.set(hostOf(g), at);
      at += r.end - r.start;
    });
    return out;
  }

  /** Replaces the shard gradients with `packed` (packGrads' layout). */
  unpackGrads(packed: FloatBuffer): void {
    let at = 0;
    this.params.forEach((p, i) => {
      const r = this.range(p, this.me);
      const len = r.end - r.start;
      if (len === 0) return;
      this.shardGrads[i]?.dispose();
      this.shardGrads[i] = keep(tensorOf(packed.slice(at, at + len), [len], this.dtype));
      at += len;
    });
  }

  shardLength(): number {
    return this.params.reduce((a, p) => {
      const r = this.range(p, this.me);
      return a + r.end - r.start;
    }, 0);
  }

  /** This rank's gradient shards (those it holds): their sum of squares is the plan's to queue once for all units. */
  gradShards(): Tensor[] {
    return this.shardGrads.filter((g): g is Tensor => g !== undefined);
  }

  /** This rank's ranges of the parameters (non-empty ones), for checkpoints. */
  pieces(): ParamPiece[] {
    const out: ParamPiece[] = [];
    this.params.forEach((p, i) => {
      const value = this.shards[i];
      if (value) out.push({ name: p.name, shape: p.shape, range: this.range(p, this.me), data: () => hostOf(value) });
    });
    return out;
  }

  /** Reads this rank's ranges with `read` (a checkpoint's loadShard, saved under any mesh); setShards() applies them. */
  async readShards(read: ShardReader): Promise<(FloatBuffer | undefined)[]> {
    const out: (FloatBuffer | undefined)[] = [];
    for (const [i, p] of this.params.entries()) {
      const s = this.shards[i];
      if (!s) {
        out.push(undefined);
        continue;
      }
      const data = await read(p.name, this.range(p, this.me));
      if (data.length !== s.numel) throw new Error(`FSDP: ${p.name}: ${data.length} elements read for a shard of ${s.numel}`);
      out.push(data);
    }
    return out;
  }

  setShards(data: readonly (FloatBuffer | undefined)[]): void {
    this.shards.forEach((s, i) => {
      const d = data[i];
      if (!s || !d) return;
      const t = tensorOf(d, [s.numel], this.dtype);
      copyInto(s, t);
      t.dispose();
    });
  }

  /** This rank's shard of parameter i and its gradient (undefined where the range is empty, or no gradient yet). */
  shardOf(i: number): { value: Tensor | undefined; grad: Tensor | undefined } {
    return { value: this.shards[i], grad: this.shardGrads[i] };
  }

  /** This rank's shards as the optimizer updates them (in place), named by their parameter. */
  rankParams(): RankParam[] {
    const out: RankParam[] = [];
    this.params.forEach((p, i) => {
      const value = this.shards[i];
      if (!value) return;
      const grads = this.shardGrads;
      out.push({
        name: p.name,
        value,
        get grad() {
          return grads[i];
        },
        zeroGrad() {
          grads[i]?.dispose();
          grads[i] = undefined;
        },
      });
    });
    return out;
  }

  zeroGrad(): void {
    for (let i = 0; i < this.shardGrads.length; i++) {
      this.shardGrads[i]?.dispose();
      this.shardGrads[i] = undefined;
    }
    for (const p of this.params) p.zeroGrad();
  }

  dispose(): void {
    this.zeroGrad();
    for (const s of this.shards) s?.dispose();
    this.release();
  }
}
