// LoadModel: checkpoint (HF directory, .gguf, or random:<shape>) -> Model, compressing
// each linear layer on load as the weights spec says. Streams tensor by tensor from the
// mmap'd checkpoint, so peak memory stays near the compressed size.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "engine/model/architecture.h"
#include "engine/model/model.h"

namespace compressd {

struct LoadOptions {
  std::string model;             // path or random:<shape>
  std::string weights = "auto";  // auto|f32|f16|bf16 or a compression preset/recipe
  std::string calibration_file;
  uint64_t random_seed = 1234;
  int32_t threads = 0;
  // --weight-memory-budget: > 0 picks per-layer formats to fit this many bytes of linear
  // weights with the least estimated error (the `budget:<bytes>` recipe, engine/compress);
  // `weights` must then be "auto" (or empty).
  uint64_t weight_memory_budget = 0;
  // Progress: (tensors done, tensors total). May be empty.
  std::function<void(int, int)> progress;
};

absl::StatusOr<std::shared_ptr<Model>> LoadModel(const LoadOptions& options);

// Hook for compression presets/recipes (engine/compress): returns the factory for a
// weights spec other than auto/f32/f16/bf16, or INVALID_ARGUMENT naming the spec.
using CompressionFactoryMaker = std::function<absl::StatusOr<LinearFactory>(
    const std::string& spec, const LoadOptions& options, const Model& partial_model)>;
void RegisterCompressionFactoryMaker(CompressionFactoryMaker maker);

}  // namespace compressd
