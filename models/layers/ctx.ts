// What a forward pass leaves for its backward. A Ctx holds the tensors a layer saved, the
// contexts of its sub-layers, and the batch every layer may read (positions, cu_seqlens).
// Freeing a Ctx disposes what it saved, so a model can release each layer's activations as
// soon as that layer's backward has run.
import type { Tensor } from "../ops.ts";

/** The device copies of a packed batch, shared by all layers of one step. */
export interface BatchTensors {
  tokens: Tensor;
  positions: Tensor;
  cuSeqlens: Tensor;
  /** The same offsets on the host: device attention validates these instead of waiting to read cuSeqlens back. */
  cuSeqlensHost?: Int32Array;
  /** Number of tokens T. */
  numTokens: number;
  /**
   * Tokens and positions were checked on the host against the vocabulary and the model's
   * positions (CausalLM's upload runs checkBatch), so the embeddings do not wait to read back
   * their device check.
   */
  checked?: boolean;
  /**
   * cos / sin of the positions' RoPE angles ([T, 2, Dh/2], native `ropeTable`), made once per
   * batch by models whose layers share one head dim and schedule, read by every layer's RoPE
   * forward and backward. Absent (a hand-built batch, a model without RoPE): each call forms them.
   */
  rope?: Tensor;
}

export class Ctx {
  private readonly saved = new Map<string, Tensor>();
  private readonly children = new Map<string, Ctx>();

  constructor(readonly batch: BatchTensors) {}

  save(key: string, t: Tensor): void {
    this.saved.set(key, t);
  }

  has(key: string): boolean {
    return this.saved.has(key);
  }

  get(key: string): Tensor {
    const t = this.saved.get(key);
    if (!t) throw new Error(`ctx: "${key}" was not saved (backward without its forward?)`);
    return t;
  }

  child(key: string): Ctx {
    let c = this.children.get(key);
    if (!c) {
      c = new Ctx(this.batch);
      this.children.set(key, c);
    }
    return c;
  }

  /** Disposes everything saved here and below, except the tensors in `keep`. */
  free(keep?: ReadonlySet<Tensor>): void {
    for (const t of this.saved.values()) if (!t.disposed && !keep?.has(t)) t.dispose();
    this.saved.clear();
    for (const c of this.children.values()) c.free(keep);
    this.children.clear();
  }
}
