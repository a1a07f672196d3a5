// Muon on FSDP-sharded matrices, the Moonlight scheme. Momentum is element-wise, so each rank
// keeps the momentum of its own flat ranges; only the Newton-Schulz orthogonalisation needs a
// whole matrix. Matrices get owner ranks round-robin over the shard group; one all-to-all
// brings every rank's ranges of the NS input to each owner, owners orthogonalise their
// matrices, a second all-to-all brings each rank its ranges of the result, and the update
// is applied to the shards. For checkpoints each rank's state is the momentum of its flat
// ranges, exactly the ranges of its parameter shards, so a checkpoint stores it like the
// shards (as models/optim's ParamState over a [length] shard) and reshards it the same way
// on load. The arithmetic is native muonStep's:
//   buf = mu*buf + g; u = NS(nesterov ? g + mu*buf : buf); p = p*(1 - lr*wd) - lr*0.2*sqrt(max(M,N))*u.
import { copyInto, newtonSchulz5, type Tensor } from "../../native/index.ts";
import type { Collectives, HostBuffer } from "../collectives/index.ts";
import { floatArray, hostOf, tensorOf } from "./host-tensors.ts";
import type { ShardedUnit } from "./sharded-unit.ts";
import type { FloatBuffer, PlanParam } from "./types.ts";
import { numel } from "./units.ts";

export interface ShardedMuonOptions {
  /** Which parameters Muon updates, by name and logical shape (models/optim usesMuon); each must be 2-D. */
  usesMuon: (name: string, shape: readonly number[]) => boolean;
  /** Parameters without weight decay (models/optim noDecay). */
  noDecay: (name: string, shape: readonly number[]) => boolean;
  momentum?: number;
  nesterov?: boolean;
  nsSteps?: number;
  weightDecay?: number;
}

interface Entry {
  unit: ShardedUnit;
  index: number;
  param: PlanParam;
  owner: number;
  /** Offset of this matrix's range in a block of the all-to-alls. */
  offset: number;
  /** This rank's momentum over its range (allocated on the first step). */
  buf: FloatBuffer | undefined;
  /** Updates applied so far (models/optim's ParamState.step; Muon's arithmetic does not use it). */
  step: number;
  decay: boolean;
}

/** One parameter's sharded Muon state: models/optim's ParamState over this rank's flat range. */
export interface ShardedMuonParamState {
  algorithm: "muon";
  step: number;
  /** [length of this rank's range]. */
  shape: number[];
  buffers: { momentum_buffer: FloatBuffer };
}

export class ShardedMuon {
  private readonly entries: Entry[] = [];
  private readonly k: number;
  private readonly blockLength: number;
  private readonly mu: number;
  private readonly nesterov: boolean;
  private readonly nsSteps: number;
  private readonly weightDecay: number;

  constructor(
    units: readonly ShardedUnit[],
    private readonly group: Collectives<HostBuffer>,
    o: ShardedMuonOptions,
  ) {
    this.k = group.ranks.length;
    this.mu = o.momentum ?? 0.95;
    this.nesterov = o.nesterov ?? true;
    this.nsSteps = o.nsSteps ?? 5;
    this.weightDecay = o.weightDecay ?? 0.1;
    if (!(this.mu >= 0 && this.mu < 1)) throw new Error(`Muon: momentum must lie in [0, 1), got ${this.mu}`);
    const fill = new Array<number>(this.k).fill(0);
    for (const unit of units) {
      unit.params.forEach((param, index) => {
        if (!o.usesMuon(param.name, param.shape)) return;
        if (param.shape.length !== 2) throw new Error(`Muon: parameter "${param.name}" is ${param.shape.length}-D; Muon updates 2-D matrices only`);
        const owner = this.entries.length % this.k;
        this.entries.push({ unit, index, param, owner, offset: fill[owner]!, buf: undefined, step: 0, decay: !o.noDecay(param.name, param.shape) });
        fill[owner]! += Math.ceil(numel(param.shape) / this.k);
      });
    }
    this.blockLength = Math.max(0, ...fill);
  }

  /** Whether Muon updates this parameter (the others go to AdamW). */
  has(name: string): boolean {
    return this.entries.some((e) => e.param.name === name);
  }

  async step(lr: number): Promise<void> {
    if (!Number.isFinite(lr) || lr < 0) throw new Error(`Muon: lr must be a finite number >= 0, got ${lr}`);
    if (this.entries.length === 0) return;
    const me = this.group.index;
    const dtype = this.entries[0]!.param.dtype;
    const B = this.blockLength;
    const send = floatArray(dtype, this.k * B);
    for (const e of this.entries) {
      const { grad } = e.unit.shardOf(e.index);
      const r = e.unit.range(e.param, me);
      const len = r.end - r.start;
      if (len === 0) continue;
      if (!grad) throw new Error(`Muon: parameter "${e.param.name}" has no gradient on this rank (finishGrads before the step)`);
      e.step++;
      const g = hostOf(grad);
      const buf = (e.buf ??= floatArray(dtype, len));
      const at = e.owner * B + e.offset;
      for (let i = 0; i < len; i++) {
        buf[i] = this.mu * buf[i]! + g[i]!;
        send[at + i] = this.nesterov ? g[i]! + this.mu * buf[i]! : buf[i]!;
      }
    }
    const inputs = (await this.group.allToAll(send)) as FloatBuffer;
    const back = floatArray(dtype, this.k * B);
    for (const e of this.entries) {
      if (e.owner !== me) continue;
      const [M, N] = e.param.shape as [number, number];
      const whole = floatArray(dtype, M * N);
      for (let j = 0; j < this.k; j++) {
        const r = e.unit.range(e.param, j);
        whole.set(inputs.subarray(j * B + e.offset, j * B + e.offset + r.end - r.start), r.start);
      }
      const g = tensorOf(whole, [M, N], dtype);
      const u = newtonSchulz5(g, this.nsSteps);
      g.dispose();
      const uh = hostOf(u);
      u.dispose();
      for (let j = 0; j < this.k; j++) {
        const r = e.unit.range(e.param, j);
        back.set(uh.subarray(r.start, r.end), j * B + e.offset);
      }
    }
    const updates = (await this.group.allToAll(back)) as FloatBuffer;
    for (const e of this.entries) {
      const value = e.unit.shardOf(e.index).value;
      if (!value) continue;
      const [M, N] = e.param.shape as [number, number];
      const decay = 1 - lr * (e.decay ? this.weightDecay : 0);
      const scale = lr * 0.2 * Math.sqrt(Math.max(M, N));
      const p = hostOf(value);
      const at = e.owner * B + e.offset;
      for (let i = 0; i < p.length; i++) p[i] = p[i]! * decay - scale * updates[at + i]!;
      writeInto(value, p);
    }
  }

  /** This rank's state by parameter name: the momentum of its ranges (none before the first step, nor for an empty range). */
  stateDict(): Record<string, ShardedMuonParamState> {
    const out: Record<string, ShardedMuonParamState> = {};
    for (const e of this.entries) {
      if (e.buf) out[e.param.name] = { algorithm: "muon", step: e.step, shape: [e.buf.length], buffers: { momentum_buffer: e.buf.slice() } };
    }
    return out;
  }

  /**
   * Replaces the state of every Muon parameter with `params`' entries over this rank's
   * ranges (a parameter without one starts fresh, as it would have); entries of parameters
   * Muon does not update are not looked at (AdamW's). Validates everything before changing anything.
   */
  loadStateDict(params: Readonly<Record<string, { algorithm: string; step: number; shape: readonly number[]; buffers: Readonly<Record<string, FloatBuffer>> }>>): void {
    const me = this.group.index;
    const loaded = this.entries.map((e) => {
      const ps = params[e.param.name];
      if (!ps) return undefined;
      const where = `Muon state: parameter "${e.param.name}"`;
      const r = e.unit.range(e.param, me);
      const len = r.end - r.start;
      if (ps.algorithm !== "muon") throw new Error(`${where} holds ${ps.algorithm} state`);
      if (!Number.isInteger(ps.step) || ps.step < 1) throw new Error(`${where}: step must be an integer >= 1, got ${ps.step}`);
      const b = ps.buffers.momentum_buffer;
      if (!b || b.length !== len || ps.shape.length !== 1 || ps.shape[0] !== len) {
        throw new Error(`${where}: expected momentum_buffer over this rank's range of ${len} elements, got shape [${ps.shape.join(", ")}]`);
      }
      const buf = floatArray(e.param.dtype, len);
      buf.set(b);
      return { buf, step: ps.step };
    });
    this.entries.forEach((e, i) => {
      e.buf = loaded[i]?.buf;
      e.step = loaded[i]?.step ?? 0;
    });
  }
}

function writeInto(t: Tensor, data: FloatBuffer): void {
  const src = tensorOf(data, t.shape, t.dtype);
  copyInto(t, src);
  src.dispose();
}
