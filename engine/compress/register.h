// Registers the recipe/preset LinearFactory maker with LoadModel
// (RegisterCompressionFactoryMaker). Idempotent; call before LoadModel.
#pragma once

namespace compressd {
void RegisterBuiltinCompression();
}  // namespace compressd
