// KvCache: the bytes of the paged KV cache (one arena) plus its BlockPool and codec.
// Block b's region for layer l is at arena + (b * n_layers + l) * LayerBlockBytes.
// Engine thread owns it; worker threads write/read disjoint blocks during a step.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/kv/block_pool.h"
#include "engine/kv/kv_codec.h"

namespace compressd {

class KvCache {
 public:
  // num_blocks from a byte budget: budget / (LayerBlockBytes * n_layers).
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(std::unique_ptr<KvCodec> codec,
                                                         int64_t memory_bytes);

  uint8_t* Block(int32_t block, int layer) {
    return arena_.get() + (static_cast<size_t>(block) * codec_->geometry().n_layers + layer) *
                              layer_bytes_;
  }
  const KvCodec& codec() const { return *codec_; }
  BlockPool& pool() { return pool_; }
  const BlockPool& pool() const { return pool_; }
  int32_t block_size() const { return codec_->geometry().block_size; }
  size_t BlockBytes() const { return layer_bytes_ * codec_->geometry().n_layers; }
  int64_t CapacityTokens() const {
    return static_cast<int64_t>(pool_.num_blocks()) * block_size();
  }

 private:
  KvCache(std::unique_ptr<KvCodec> codec, int32_t num_blocks);
  std::unique_ptr<KvCodec> codec_;
  size_t layer_bytes_;
  std::unique_ptr<uint8_t[]> arena_;
  BlockPool pool_;
};

}  // namespace compressd
