// Tensor element types. The numeric codes are the addon's (src/core/dtype.h).
export type DType = "float32" | "float64" | "bfloat16" | "int32" | "int64";
export type Device = "cpu" | "cuda";

/** The addon's codes (src/core/device.h). */
export const deviceCode: Record<Device, number> = { cpu: 0, cuda: 1 };
export const deviceOfCode: readonly Device[] = ["cpu", "cuda"];

export const dtypeCode: Record<DType, number> = { float32: 0, float64: 1, bfloat16: 2, int32: 3, int64: 4 };
/** Bytes an element takes. */
export const dtypeBytes: Record<DType, number> = { float32: 4, float64: 8, bfloat16: 2, int32: 4, int64: 8 };
