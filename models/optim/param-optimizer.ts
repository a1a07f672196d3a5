// The state machinery shared by AdamW and Muon+AdamW: each parameter is routed to an update
// rule once, at construction; its state buffers are made on its first gradient (in the
// parameter's dtype, fp32 for fp32 master weights) and live outside every scope until
// dispose().
import { ops, type Tensor } from "../ops.ts";
import type { Algorithm, BufferSource, OptimParam, Optimizer, OptimizerStateDict, OptimizerStateSource, ParamPredicate, ParamState, PreparedStep } from "./types.ts";
import type { PreparedUpdates, Update, UpdateRule } from "./update-rules.ts";

interface Entry {
  readonly param: OptimParam;
  readonly rule: UpdateRule;
  readonly decay: boolean;
  /** This parameter's updates so far (torch counts per parameter: one that missed a step lags). */
  step: number;
  state: Tensor[] | undefined;
}

export interface Routing {
  /** The update rule for a parameter. */
  route(p: OptimParam): UpdateRule;
  weightDecay: number;
  noDecay: ParamPredicate;
}

const shapeText = (s: readonly number[]): string => `[${s.join(", ")}]`;

/** A state source with every buffer read now: the plain state dict. */
export function materializeState(src: OptimizerStateSource): OptimizerStateDict {
  const params: Record<string, ParamState> = {};
  for (const [name, ps] of Object.entries(src.params)) {
    const buffers: ParamState["buffers"] = {};
    for (const [b, read] of Object.entries(ps.buffers)) buffers[b] = typeof read === "function" ? read() : read;
    params[name] = { ...ps, buffers };
  }
  return { step: src.step, params };
}

export class ParamOptimizer implements Optimizer {
  #step = 0;
  #disposed = false;
  /** Bumped by every applied step and loadStateDict: a prepared step from before is stale. */
  #generation = 0;
  readonly #entries = new Map<string, Entry>();
  readonly #weightDecay: number;

  protected constructor(params: readonly OptimParam[], r: Routing) {
    if (!Number.isFinite(r.weightDecay) || r.weightDecay < 0) throw new Error(`optimizer: weight_decay must be a finite number >= 0, got ${r.weightDecay}`);
    this.#weightDecay = r.weightDecay;
    for (const p of params) {
      if (this.#entries.has(p.name)) throw new Error(`optimizer: parameter "${p.name}" is given twice`);
      if (p.value.dtype !== "float32" && p.value.dtype !== "float64") {
        throw new Error(`optimizer: parameter "${p.name}" is ${p.value.dtype}; the optimizer updates float32 master weights (float64 in checks)`);
      }
      this.#entries.set(p.name, { param: p, rule: r.route(p), decay: !r.noDecay(p.name, p.value.shape), step: 0, state: undefined });
    }
  }

  get stepCount(): number {
    return this.#step;
  }

  algorithms(): ReadonlyMap<string, Algorithm> {
    return new Map([...this.#entries].map(([name, e]) => [name, e.rule.algorithm]));
  }

  /** The parameters that get weight decay (the decay rule, made visible). */
  decayed(): string[] {
    return [...this.#entries].filter(([, e]) => e.decay).map(([name]) => name);
  }

  step(lr: number, gradScale = 1): void {
    const prepared = this.prepareStep(lr);
    try {
      prepared.apply(gradScale);
    } finally {
      // A refused apply (a non-finite gradScale) lets go of what the preparation holds at once.
      prepared.drop();
    }
  }

  prepareStep(lr: number): PreparedStep {
    this.#live();
    if (!Number.isFinite(lr) || lr < 0) throw new Error(`optimizer: lr must be a finite number >= 0, got ${lr}`);
    // Every gradient is checked before any parameter moves, so a bad one leaves the model whole.
    const ready: [Entry, Tensor, Tensor, Tensor | undefined][] = [];  // entry, gradient, value, compute copy
    for (const e of this.#entries.values()) {
      const g = e.param.grad;
      if (g === undefined) continue;
      const v = e.param.value;
      if (g.dtype !== v.dtype || g.device !== v.device || !ops.sameShape(g.shape, v.shape)) {
        throw new Error(`optimizer: parameter "${e.param.name}": gradient ${g.dtype} ${shapeText(g.shape)} does not match value ${v.dtype} ${shapeText(v.shape)}`);
      }
      ready.push([e, g, v, e.param.computeCopy]);
    }
    // Parameters of one rule update together where the rule can (one launch for many on cuda).
    // Step counts advance only when the step is applied: a prepared step may be dropped.
    const byRule = new Map<UpdateRule, Update[]>();
    for (const [e, g, v, copy] of ready) {
      e.state ??= e.rule.buffers.map(() => ops.keep(ops.zeros(v.shape, v.dtype, v.device)));
      const u: Update = { value: v, grad: g, state: e.state, o: { lr, step: e.step + 1, weightDecay: e.decay ? this.#weightDecay : 0, computeCopy: copy } };
      const list = byRule.get(e.rule) ?? [];
      list.push(u);
      byRule.set(e.rule, list);
    }
    const prepared: PreparedUpdates[] = [];
    for (const [rule, updates] of byRule) {
      if (rule.prepareMany) {
        prepared.push(rule.prepareMany(updates));
        continue;
      }
      prepared.push({
        launch(gradScale) {
          for (const u of updates) {
            if (gradScale !== 1) ops.scaleInPlace(u.grad, gradScale);
            rule.apply(u.value, u.grad, u.state, u.o);
          }
        },
        drop() {},
      });
    }
    let state: "prepared" | "applied" | "dropped" = "prepared";
    const generation = this.#generation;
    return {
      apply: (gradScale = 1) => {
        if (state !== "prepared") throw new Error(state === "applied" ? "optimizer: a prepared step is applied once" : "optimizer: this prepared step was dropped");
        if (!Number.isFinite(gradScale)) throw new Error(`optimizer: gradScale must be finite, got ${gradScale}`);
        this.#live();
        // The prepared updates hold the tensors and step counts of their preparation (on cuda, raw
        // device pointers): applied over another step, loaded state or replaced tensors, they would
        // write state no one reads, with stale bias corrections.
        if (generation !== this.#generation) throw new Error("optimizer: a prepared step is stale (the optimizer stepped or loaded state since)");
        for (const [e, g, v, copy] of ready) {
          const p = e.param;
          if (p.grad !== g || p.value !== v || p.computeCopy !== copy || g.disposed || v.disposed || copy?.disposed) {
            throw new Error(`optimizer: a prepared step is stale (parameter "${p.name}" has a new value, gradient or compute copy since, or one was disposed)`);
          }
        }
        state = "applied";
        this.#generation++;
        for (const p of prepared) p.launch(gradScale);
        for (const [e] of ready) e.step++;
        this.#step++;
      },
      drop: () => {
        if (state !== "prepared") return;
        state = "dropped";
        for (const p of prepared) p.drop();
      },
    };
  }

  stateDict(): OptimizerStateDict {
    return materializeState(this.stateSource());
  }

  stateSource(): OptimizerStateSource {
    this.#live();
    const params: OptimizerStateSource["params"] = {};
    for (const [name, e] of this.#entries) {
      const state = e.state;
      // step 0: buffers made by a prepared step that was dropped (a non-finite first norm), still
      // zero; as no state at all (a loaded step must be >= 1).
      if (!state || e.step === 0) continue;
      const buffers: Record<string, BufferSource> = {};
      e.rule.buffers.forEach((b, i) => {
        buffers[b] = () => state[i]!.toArray() as Float32Array | Float64Array;
      });
      params[name] = { algorithm: e.rule.algorithm, step: e.step, shape: [...e.param.value.shape], buffers };
    }
    return { step: this.#step, params };
  }

  loadStateDict(s: OptimizerStateDict): void {
    this.#live();
    if (!Number.isInteger(s.step) || s.step < 0) throw new Error(`optimizer state: step must be an integer >= 0, got ${s.step}`);
    if (typeof s.params !== "object" || s.params === null) throw new Error("optimizer state: params must be an object keyed by parameter name");
    for (const [name, ps] of Object.entries(s.params)) this.#check(name, ps, s.step);
    for (const e of this.#entries.values()) this.#free(e);
    for (const [name, ps] of Object.entries(s.params)) {
      const e = this.#entries.get(name)!;
      const v = e.param.value;
      e.state = e.rule.buffers.map((b) => ops.keep(ops.tensor(ps.buffers[b]!, v.shape, { dtype: v.dtype, device: v.device })));
      e.step = ps.step;
    }
    this.#step = s.step;
    this.#generation++;
  }

  dispose(): void {
    for (const e of this.#entries.values()) this.#free(e);
    this.#disposed = true;
  }

  #check(name: string, ps: ParamState, step: number): void {
    const e = this.#entries.get(name);
    const where = `optimizer state: parameter "${name}"`;
    if (!e) throw new Error(`${where} is not one of this optimizer's parameters`);
    if (ps.algorithm !== e.rule.algorithm) throw new Error(`${where} holds ${ps.algorithm} state but is routed to ${e.rule.algorithm}`);
    const shape = e.param.value.shape;
    if (!Array.isArray(ps.shape) || !ops.sameShape(ps.shape, shape)) {
      throw new Error(`${where} has shape ${Array.isArray(ps.shape) ? shapeText(ps.shape) : String(ps.shape)}, the parameter ${shapeText(shape)}`);
    }
    if (!Number.isInteger(ps.step) || ps.step < 1 || ps.step > step) throw new Error(`${where}: step must be an integer in [1, ${step}], got ${ps.step}`);
    const want = [...e.rule.buffers].sort();
    const got = Object.keys(ps.buffers ?? {}).sort();
    if (want.join() !== got.join()) throw new Error(`${where} has buffers [${got.join(", ")}], expected [${want.join(", ")}]`);
    const numel = e.param.value.numel;
    for (const b of want) {
      const a = ps.buffers[b];
      if (!(a instanceof Float32Array || a instanceof Float64Array) || a.length !== numel) {
        throw new Error(`${where}: buffer ${b} must be a Float32Array or Float64Array of ${numel} elements`);
      }
    }
  }

  #free(e: Entry): void {
    for (const t of e.state ?? []) t.dispose();
    e.state = undefined;
    e.step = 0;
  }

  #live(): void {
    if (this.#disposed) throw new Error("optimizer: used after dispose()");
  }
}
