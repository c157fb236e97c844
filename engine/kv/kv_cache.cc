#include "engine/kv/kv_cache.h"

#include <cstring>

namespace compressd {

KvCache::KvCache(std::unique_ptr<KvCodec> codec, int32_t num_blocks)
    : codec_(std::move(codec)),
      layer_bytes_(codec_->LayerBlockBytes()),
      arena_(new uint8_t[layer_bytes_ * codec_->geometry().n_layers * num_blocks]),
      pool_(num_blocks) {}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(std::unique_ptr<KvCodec> codec,
                                                         int64_t memory_bytes) {
  const size_t block_bytes = codec->LayerBlockBytes() * codec->geometry().n_layers;
  const int64_t n = memory_bytes / static_cast<int64_t>(block_bytes);
  if (n < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv-cache-memory of ", memory_bytes, " bytes holds fewer than 2 blocks of ",
        block_bytes, " bytes; raise it"));
  }
  if (n > (int64_t{1} << 30)) return absl::InvalidArgumentError("--kv-cache-memory too large");
  return std::unique_ptr<KvCache>(new KvCache(std::move(codec), static_cast<int32_t>(n)));
}

}  // namespace compressd
