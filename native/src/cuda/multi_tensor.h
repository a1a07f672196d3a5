// Packing many tensors into few launches (AdamW's update, the global norm's sum of squares):
// the items in order, empty ones left out, at most kMax a launch; each item's blockStart is its
// first block in its launch (`chunk` elements a block), and the items travel as one kernel
// parameter, so nothing is copied to the device per call. Since CUDA 12.1 a parameter may take
// up to 32,764 bytes (4 KB before), enough for a whole model's few hundred tensors in one
// launch: one tail instead of one per launch.
#pragma once
#include <cstdint>

namespace tessera::cuda {

template <class Item, int kMax>
struct ItemBatch {
  Item items[kMax];
  int count;
};

/** The item that block b works on: the last one whose blockStart <= b (a binary search, as a
    linear one costs each block up to kMax dependent parameter reads before its first load). */
template <class Item, int kMax>
__device__ __forceinline__ const Item& ItemOfBlock(const ItemBatch<Item, kMax>& batch, int64_t b) {
  int lo = 0, hi = batch.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (batch.items[mid].blockStart <= b) lo = mid;
    else hi = mid - 1;
  }
  return batch.items[lo];
}

/** Calls launch(batch, blocks) for each launch's worth of items[0..count) with n > 0, in order. */
template <int kMax, class Item, class Launch>
void LaunchInBatches(const Item* items, int count, int64_t chunk, Launch launch) {
  ItemBatch<Item, kMax> batch{};
  int64_t blocks = 0;
  for (int i = 0; i < count; ++i) {
    if (items[i].n == 0) continue;
    Item t = items[i];
    t.blockStart = blocks;
    blocks += (t.n + chunk - 1) / chunk;
    batch.items[batch.count++] = t;
    if (batch.count == kMax) {
      launch(batch, blocks);
      batch = {};
      blocks = 0;
    }
  }
  if (batch.count > 0) launch(batch, blocks);
}

}  // namespace tessera::cuda
