// The limit of copyColumns, which both backends share and TypeScript reads from the addon
// (exports.maxColumnParts); apart from Node-API so that the CUDA kernel, whose launch parameter
// holds that many part pointers, sees it too.
#pragma once

namespace tessera {

/** The most parts copyColumns takes (splitColumns, catColumns, splitRows, catRows). */
constexpr int kMaxColumnParts = 8;

}  // namespace tessera
