// OpenCheckpoint: the one entry point that turns a path into a model's config and tensors.
// Accepted: a Hugging Face directory (config.json + model.safetensors or a sharded
// model.safetensors.index.json), a .safetensors file (config.json beside it), or a GGUF file
// (config from its metadata, tensors under HF names; `gguf` stays set so callers can read
// the tokenizer with ReadGgufVocab). The config is validated. NOT_FOUND / INVALID_ARGUMENT
// name the path and what is missing or malformed.
#pragma once

#include <memory>
#include <string>

#include "engine/core/status.h"
#include "engine/model/config.h"
#include "engine/model/gguf.h"
#include "engine/model/tensor_source.h"

namespace compressd {

struct LoadedCheckpoint {
  ModelConfig config;
  std::unique_ptr<TensorSource> tensors;
  std::string dir;                 // folder holding the checkpoint (tokenizer files live here)
  std::shared_ptr<GgufFile> gguf;  // null for Hugging Face checkpoints
};

absl::StatusOr<LoadedCheckpoint> OpenCheckpoint(const std::string& path);

}  // namespace compressd
