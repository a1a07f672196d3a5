// Packing many tensors into few launches (AdamW's update, the global norm's sum of squares):
// the items in order, empty ones left out, at most kMax a launch; each item's blockStart is its
// first block in its launch (`chunk` elements a block), and the items travel as one kernel
// parameter (under the 4 KB limit), so nothing is copied to the device per call.
#pragma once
#include <cstdint>

namespace tessera::cuda {

template <class Item, int kMax>
struct ItemBatch {
  Item items[kMax];
  int count;
};

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
