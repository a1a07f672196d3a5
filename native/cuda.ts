// The CUDA side of the TypeScript face: choosing the backend of an op from its inputs' device,
// the caching allocator's figures, and stream events. Ops call `backendFor`; everything else
// here is public (re-exported by index.ts).
import { loadAddon, type Addon, type CudaAddon, type CudaMatmulCounts, type CudaMemoryStats, type EventHandle } from "./addon.ts";
import type { Device } from "./dtype.ts";

let cudaChecked: CudaAddon | undefined;

/** The CUDA ops, or an Error naming op that says why "cuda" is not available here. */
export function cudaAddon(op: string): CudaAddon {
  if (cudaChecked) return cudaChecked;
  const a = loadAddon();
  if (!a.cuda) throw new Error(`${op}: device "cuda" is not available: this addon was built without CUDA (CMake found no CUDA toolkit)`);
  const n = a.buildInfo().cudaDevices;
  if (n < 1) throw new Error(`${op}: device "cuda" is not available: no CUDA device is visible`);
  a.cuda.init();
  cudaChecked = a.cuda;
  return cudaChecked;
}

/** Whether device tensors can be made here (a CUDA build that sees a GPU). */
export function cudaAvailable(): boolean {
  const a = loadAddon();
  return a.cuda !== undefined && a.buildInfo().cudaDevices > 0;
}

export interface DeviceTensorLike {
  readonly device: Device;
}

/** The one device of an op's tensor inputs; inputs on different devices are an Error naming op. */
export function deviceOfInputs(op: string, ...inputs: [string, DeviceTensorLike][]): Device {
  const first = inputs[0];
  if (!first) return "cpu";
  for (const [name, t] of inputs) {
    if (t.device !== first[1].device) {
      throw new Error(`${op}: ${name} is on ${t.device} but ${first[0]} is on ${first[1].device} (move it with .to())`);
    }
  }
  return first[1].device;
}

/** The raw functions for an op whose inputs all live on one device: the CPU's or the CUDA ones. */
export function backendFor<K extends keyof CudaAddon & keyof Addon>(
  op: string,
  fn: K,
  ...inputs: [string, DeviceTensorLike][]
): Addon[K] | CudaAddon[K] {
  return deviceOfInputs(op, ...inputs) === "cuda" ? cudaFn(op, fn) : loadAddon()[fn];
}

/** A cuda function by name (wrapped in timed events while a profile runs); backendFor's cuda side, and ops that dispatch themselves. */
export function cudaFn<K extends keyof CudaAddon>(op: string, fn: K): CudaAddon[K] {
  const f = cudaAddon(op)[fn];
  return profile && typeof f === "function" ? (profiled(op, f as (...a: unknown[]) => unknown) as CudaAddon[K]) : f;
}

// ---- op profiling (benchmarks): timed events around every cuda op call

interface OpSpan {
  op: string;
  start: EventHandle;
  end: EventHandle;
}
let profile: OpSpan[] | undefined;

function profiled(op: string, f: (...a: unknown[]) => unknown): (...a: unknown[]) => unknown {
  return (...args) => {
    const a = cudaAddon(op);
    const start = a.recordEvent(streamCode.compute, true);
    const r = f(...args);
    profile?.push({ op, start, end: a.recordEvent(streamCode.compute, true) });
    return r;
  };
}

/**
 * A tensor-level call that fills or copies device memory (zeros, clone, to, copyInto, an upload),
 * which goes to the addon directly rather than through cudaFn: timed as `op` while a profile
 * runs and the call touches cuda memory, so a profile covers the copies as well as the kernels.
 */
export function profiledCopy<T>(op: string, touchesCuda: boolean, run: () => T): T {
  return profile && touchesCuda ? (profiled(op, run)() as T) : run();
}

/** Device time of each cuda op from now until stopCudaProfile (recording events costs some host time). */
export function startCudaProfile(): void {
  profile = [];
}

/** Waits for the device and returns milliseconds and calls per op name since startCudaProfile. */
export function stopCudaProfile(): Map<string, { ms: number; calls: number }> {
  const spans = profile ?? [];
  profile = undefined;
  const a = cudaAddon("stopCudaProfile");
  a.synchronize();
  const out = new Map<string, { ms: number; calls: number }>();
  for (const s of spans) {
    const e = out.get(s.op) ?? { ms: 0, calls: 0 };
    e.ms += a.eventElapsedMs(s.start, s.end);
    e.calls++;
    out.set(s.op, e);
  }
  return out;
}

/** A profile as reported: the device total and each op's time and calls, slowest first, in microsecond precision. */
export interface CudaProfileSummary {
  device_ms: number;
  ops: Record<string, { ms: number; calls: number }>;
}

/** Orders and rounds stopCudaProfile's figures for a report (the rank actor's profiled step, the GPU bench). */
export function summarizeCudaProfile(byOp: Map<string, { ms: number; calls: number }>): CudaProfileSummary {
  const ms = (x: number) => +x.toFixed(3);
  const sorted = [...byOp].sort((a, b) => b[1].ms - a[1].ms);
  return {
    device_ms: ms(sorted.reduce((a, [, t]) => a + t.ms, 0)),
    ops: Object.fromEntries(sorted.map(([op, t]) => [op, { ms: ms(t.ms), calls: t.calls }])),
  };
}

/** The caching device allocator's figures (see CudaMemoryStats). */
export function cudaMemoryStats(): CudaMemoryStats {
  return cudaAddon("cudaMemoryStats").memoryStats();
}

export function cudaResetPeak(): void {
  cudaAddon("cudaResetPeak").resetPeak();
}

/** Gives the cached device blocks back to the driver (waits for the device); the bytes freed. */
export function cudaEmptyCache(): number {
  return cudaAddon("cudaEmptyCache").emptyCache();
}

/** Debug: fresh device blocks are filled with NaN bytes, so an unwritten output element shows. */
export function cudaSetDebugFill(on: boolean): void {
  cudaAddon("cudaSetDebugFill").setDebugFill(on);
}

/**
 * Which attention kernels run: "auto" (Hopper's wgmma kernels where built for sm_90a and on such
 * a GPU, else mma.sync), or one family by name (tests and benches compare them). Returns the
 * family now in use; with no argument, only reports it.
 */
export function cudaAttentionKernels(which?: "auto" | "mma" | "wgmma"): "mma" | "wgmma" {
  return cudaAddon("cudaAttentionKernels").attentionKernels(which);
}

/** The attention kernel families this build and GPU can run (mma always; wgmma on Hopper in an sm_90a build). */
export function cudaAttentionFamilies(): ("mma" | "wgmma")[] {
  return cudaAddon("cudaAttentionFamilies").attentionFamilies();
}

/** How many cuda GEMMs ran through cuBLASLt and through the reference kernel (tests: which path served). */
export function cudaMatmulCounts(): CudaMatmulCounts {
  return cudaAddon("cudaMatmulCounts").matmulCounts();
}

/** Waits for all queued device work; an asynchronous kernel fault surfaces here. */
export function cudaSynchronize(): void {
  cudaAddon("cudaSynchronize").synchronize();
}

export type CudaStream = "compute" | "comm";
const streamCode: Record<CudaStream, number> = { compute: 0, comm: 1 };

/** A point in a stream's queue; another stream can wait for it. Freed by the GC. */
export class CudaEvent {
  private constructor(readonly handle: EventHandle) {}

  /** Marks the work queued on stream so far; a timed event (profiling: it costs more) can be measured with elapsedMsSince. */
  static record(stream: CudaStream, o: { timed?: boolean } = {}): CudaEvent {
    return new CudaEvent(cudaAddon("CudaEvent.record").recordEvent(streamCode[stream], o.timed ?? false));
  }

  /** Device milliseconds from `start` to this event; both timed and done (synchronize first). */
  elapsedMsSince(start: CudaEvent): number {
    return cudaAddon("CudaEvent.elapsedMsSince").eventElapsedMs(start.handle, this.handle);
  }

  /** Work queued on stream from now on runs after this event's work (the host does not wait). */
  waitOn(stream: CudaStream): void {
    cudaAddon("CudaEvent.waitOn").waitEvent(streamCode[stream], this.handle);
  }

  /** The host waits for this event's work. */
  synchronize(): void {
    cudaAddon("CudaEvent.synchronize").eventSynchronize(this.handle);
  }
}
