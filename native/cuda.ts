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
  return deviceOfInputs(op, ...inputs) === "cuda" ? cudaAddon(op)[fn] : loadAddon()[fn];
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

  /** Marks the work queued on stream so far. */
  static record(stream: CudaStream): CudaEvent {
    return new CudaEvent(cudaAddon("CudaEvent.record").recordEvent(streamCode[stream]));
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
