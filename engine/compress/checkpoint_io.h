// Compressed checkpoints: a folder that loads without recompressing.
//   model.safetensors : every Linear's buffers as U8 tensors "<name>.data", "<name>.aux0..3"
//                       (absent when empty), a low-rank factor V under "<name>.first.*",
//                       biases as F32 under their HF names ("...q_proj.bias"), norms as F32,
//                       the embedding as stored (plain dtype). Tensors start 64-byte aligned.
//   compressd.json    : {"format": "compressd", "version": 1, "source_model", "recipe",
//                        "linears": {name: {rows, cols, format_name, kind, dtype, bits,
//                        symmetric, group_size, rank, sparsity, variant, [first: {...}]}}}
//   config.json, tokenizer.json, tokenizer_config.json copied from the source folder.
// Loading: OpenCheckpoint (engine/model/checkpoint.cc) sees compressd.json and returns a
// CompressedCheckpointSource; LoadModel then builds each Linear straight from the mapped
// buffers (zero copy) with StoredLinearFactory(). Every buffer is validated against its
// format (sizes, internal offsets); a malformed entry is INVALID_ARGUMENT naming the tensor.
#pragma once

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "engine/model/architecture.h"
#include "engine/model/model.h"
#include "engine/model/safetensors.h"
#include "nlohmann/json.hpp"

namespace compressd {

inline constexpr char kCompressedMetadataFile[] = "compressd.json";

// Writes m to out_dir (created if missing). `source_dir` is where config.json and the
// tokenizer files are copied from (defaults to m.id when it is a folder).
absl::Status SaveCompressedCheckpoint(const Model& m, const std::string& out_dir,
                                      const std::string& source_dir = "");

// A TensorSource whose linear layers are materialised by the source itself, in their stored
// format (compressed checkpoints; GPTQ/AWQ checkpoints converted to int4 groups).
class StoredLinearSource : public TensorSource {
 public:
  virtual bool HasLinear(const std::string& name) const = 0;
  virtual absl::StatusOr<Linear> LoadLinear(const std::string& name) const = 0;
  // False when Get() of a linear gives no values (a compressed checkpoint), so other weight
  // specs cannot recompress it.
  virtual bool AllowsRecompression() const = 0;
};

class CompressedCheckpointSource : public StoredLinearSource {
 public:
  // dir holds compressd.json + model.safetensors. INVALID_ARGUMENT for a malformed file.
  static absl::StatusOr<std::unique_ptr<CompressedCheckpointSource>> Open(const std::string& dir);

  // Linear names answer with a placeholder view (shape [rows][cols], no data): their bytes
  // are read by StoredLinearFactory(). Other names are the safetensors tensors.
  std::vector<std::string> Names() const override;
  bool Has(const std::string& name) const override;
  absl::StatusOr<TensorView> Get(const std::string& name) const override;
  std::string Describe() const override { return tensors_->Describe(); }

  // Builds the stored Linear of `name` (e.g. "lm_head.weight"); NOT_FOUND when none.
  absl::StatusOr<Linear> LoadLinear(const std::string& name) const override;
  bool HasLinear(const std::string& name) const override { return linears_.contains(name); }
  bool AllowsRecompression() const override { return false; }
  const nlohmann::json& metadata() const { return meta_; }

 private:
  absl::StatusOr<Linear> Build(const std::string& name, const nlohmann::json& e) const;
  std::unique_ptr<SafetensorsSource> tensors_;
  nlohmann::json meta_;
  absl::flat_hash_map<std::string, nlohmann::json> linears_;
};

// Factory for LoadModel: stored Linears by name (tied lm_head included); anything not stored
// falls back to a dense view of the tensor. `src` must outlive the factory.
LinearFactory StoredLinearFactory(const StoredLinearSource* src);

// Hugging Face GPTQ / AWQ 4-bit checkpoints (tensors "<x>.qweight", ".qzeros", ".scales",
// ".g_idx"; config.json "quantization_config"): when `src` holds any "*.qweight", returns a
// source that serves "<x>.weight" for them — as int4 group Linears (kernels/quant.h
// PackGroupCodes) through LoadLinear, and as dequantized F32 values through Get(). Act-order
// GPTQ (g_idx not ascending by group) cannot keep its groups: converted to BF16 with a
// WARNING. Other bit widths are UNIMPLEMENTED. Without qweight tensors `src` is returned.
absl::StatusOr<std::unique_ptr<TensorSource>> WrapQuantizedSafetensors(
    std::unique_ptr<SafetensorsSource> src, const std::string& dir);

}  // namespace compressd
