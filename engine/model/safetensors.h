// SafetensorsSource: the tensors of one .safetensors file, of a directory holding
// model.safetensors, or of a sharded checkpoint (model.safetensors.index.json whose
// weight_map names the shard of each tensor). Files are memory-mapped and every header is
// validated on Open (length, JSON, dtype, shape, data_offsets within the data section and
// equal to numel * dtype size, no overlaps, no duplicate names, shards present and holding
// what the index says), so Get() never fails for a listed tensor and returns zero-copy views
// kept alive by the mapping. Immutable after Open(): any thread may call it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/core/mmap_file.h"
#include "engine/model/tensor_source.h"

namespace compressd {

class SafetensorsSource : public TensorSource {
 public:
  // NOT_FOUND for missing files (the path or a shard), INVALID_ARGUMENT naming the file and
  // tensor for anything malformed.
  static absl::StatusOr<std::unique_ptr<SafetensorsSource>> Open(const std::string& path_or_dir);
  // One in-memory .safetensors image (tests, fuzzers).
  static absl::StatusOr<std::unique_ptr<SafetensorsSource>> OpenFromBytes(
      std::string bytes, std::string name = "<memory>");

  std::vector<std::string> Names() const override;  // sorted
  bool Has(const std::string& name) const override;
  absl::StatusOr<TensorView> Get(const std::string& name) const override;
  std::string Describe() const override { return describe_; }

  // The __metadata__ string map of the first file (empty when absent).
  const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }

 private:
  SafetensorsSource() = default;
  absl::Status AddFile(std::shared_ptr<MmapFile> file);
  static absl::StatusOr<std::unique_ptr<SafetensorsSource>> OpenSharded(
      const std::string& dir, const std::string& index_path);

  std::string describe_;
  std::vector<std::shared_ptr<MmapFile>> files_;
  absl::flat_hash_map<std::string, TensorView> tensors_;
  std::vector<std::pair<std::string, std::string>> metadata_;
};

}  // namespace compressd
