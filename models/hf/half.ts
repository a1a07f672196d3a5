// bf16 / fp16 <-> fp32 bit conversions for checkpoint files. Widening is exact; narrowing
// to bf16 rounds to nearest-even like torch's `.to(torch.bfloat16)`, so a bf16 file read and
// written back is bit-identical.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function bf16ToF32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  const out = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i]! << 16;
  return dst;
}

export function f32ToBf16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const u = bits[i]!;
    // NaN keeps its sign and stays a (quiet) NaN instead of rounding into infinity.
    if ((u & 0x7fffffff) > 0x7f800000) dst[i] = (u >>> 16) | 0x0040;
    else dst[i] = (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
  }
  return dst;
}

export function f16ToF32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  for (let i = 0; i < src.length; i++) dst[i] = f16BitsToNumber(src[i]!);
  return dst;
}

function f16BitsToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24; // subnormal (and zero)
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** One fp32 value rounded to bf16 and widened back (what a bf16 round trip does to it). */
export function roundToBf16(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  u32[0] = ((u & 0x7fffffff) > 0x7f800000 ? (u >>> 16) | 0x0040 : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16) << 16;
  return f32[0]!;
}
