// What a parent does when a child fails (shared by in-process actors and child processes).
export type Directive = "restart" | "stop" | "escalate";

export interface SupervisionPolicy {
  /** A fixed directive, or one chosen per failure. */
  strategy: Directive | ((error: unknown) => Directive);
  /** Restarts allowed within `withinMs`; one more failure escalates instead (default 3). */
  maxRestarts?: number;
  /** The sliding window for `maxRestarts` (default 60 s). */
  withinMs?: number;
}

export const defaultPolicy: SupervisionPolicy = { strategy: "restart", maxRestarts: 3, withinMs: 60_000 };

/**
 * Counts restarts in a sliding window. `decide` turns a failure into a directive, escalating a
 * restart that would exceed the budget: a child that keeps failing is its parent's problem.
 */
export class RestartBudget {
  private readonly times: number[] = [];

  constructor(private readonly policy: SupervisionPolicy) {}

  decide(error: unknown, now = performance.now()): { directive: Directive; exhausted: boolean } {
    const s = this.policy.strategy;
    const directive = typeof s === "function" ? s(error) : s;
    if (directive !== "restart") return { directive, exhausted: false };
    const window = this.policy.withinMs ?? 60_000;
    while (this.times.length > 0 && now - this.times[0]! > window) this.times.shift();
    if (this.times.length >= (this.policy.maxRestarts ?? 3)) return { directive: "escalate", exhausted: true };
    this.times.push(now);
    return { directive: "restart", exhausted: false };
  }

  /** Restarts counted in the current window. */
  get recent(): number {
    return this.times.length;
  }
}
