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
  // Weights the kernels read as stored (plain F32/F16/BF16 at the requested dtype, GGUF
  // Q8_0/Q4_0 blocks) are copied out of the file's mapping into memory the model owns, and
  // the file's pages released: decode reads such memory 20-50% faster than page-cache pages on
  // the measured VM (Llama-3.2-1B bf16 safetensors 12.5-15.9 -> 17.6-19.0 tok/s, Q4_0 GGUF
  // 37-42 -> 47-50; docs/BENCHMARKS.md sessions 9-10). true = read them in place instead
  // (`--mmap-weights`): a faster load, pages shared with other processes mapping the file.
  bool mmap_weights = false;
  // The model runs on this process's CPU kernels: weights take the order those kernels read
  // fastest (UseCpuKernelLayouts, engine/compress/linear.h). False for `compress`/`info` and
  // GPU devices, which keep the stored order.
  bool cpu_kernel_layouts = false;
  // Progress: (tensors done, tensors total). May be empty.
  std::function<void(int, int)> progress;
};

absl::StatusOr<std::shared_ptr<Model>> LoadModel(const LoadOptions& options);

// True when `l` (or the first factor of a two-GEMM format) keeps `owner` alive through its
// storage, i.e. may still read the checkpoint bytes it was built from. LoadModel releases a
// tensor's file pages after building it exactly when this is false.
bool LinearHoldsOwner(const Linear& l, const std::shared_ptr<const void>& owner);

// Hook for compression presets/recipes (engine/compress): returns the factory for a
// weights spec other than auto/f32/f16/bf16, or INVALID_ARGUMENT naming the spec.
using CompressionFactoryMaker = std::function<absl::StatusOr<LinearFactory>(
    const std::string& spec, const LoadOptions& options, const Model& partial_model)>;
void RegisterCompressionFactoryMaker(CompressionFactoryMaker maker);

}  // namespace compressd
