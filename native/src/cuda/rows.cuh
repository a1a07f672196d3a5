// The row layout the row-wise kernels share (LayerNorm, RMSNorm's forward and scalar backward): a
// warp per row in blocks of 8 warps, 16-byte vectors held per lane, and fixed chunks of rows for
// the column sums (so their partials, and the sums, are the same on every run; the bias gradient
// takes longer chunks).
#pragma once
#include "cuda/vec.cuh"

namespace tessera::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int64_t kMinRowsPerChunk = 64;
constexpr int64_t kMaxChunks = 65535;  // gridDim.y

/** Rows a column-sum chunk takes: at least `least` (64), more where the chunks would pass gridDim.y's limit. */
inline int64_t RowsPerChunk(int64_t rows, int64_t least = kMinRowsPerChunk) {
  int64_t need = (rows + kMaxChunks - 1) / kMaxChunks;
  return need > least ? need : least;
}

/** Blocks of a warp-per-row launch over `rows`. */
inline unsigned RowBlocks(int64_t rows) { return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock); }

/** Blocks of a launch whose warps walk the rows (row r to warp r mod warps): as RowBlocks, at most `cap`. */
inline int64_t WalkingBlocks(int64_t rows, int64_t cap) {
  int64_t need = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  return need < cap ? need : cap;
}

/** Vectors per lane the vector kernels need for D (0: D is not a whole number of vectors). */
template <class T>
int VecsPerLane(int64_t D) {
  if (D % kVec<T> != 0) return 0;
  int64_t per = (D / kVec<T> + 31) / 32;
  return per <= 1 ? 1 : per <= 2 ? 2 : per <= 4 ? 4 : per <= 8 ? 8 : per <= 16 ? 16 : 32;
}

}  // namespace
}  // namespace tessera::cuda
