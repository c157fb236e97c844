// random:<shape> models: real architectures' exact shapes with deterministic random
// weights, generated in memory (values do not change speed). Used for benchmarks and
// tests; their text is meaningless.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/model/config.h"
#include "engine/model/tensor_source.h"
#include "engine/model/vocab.h"

namespace compressd {

// Shape names: tiny, smollm2-135m, llama-3.2-1b, llama-3.1-8b, qwen2-0.5b.
std::vector<std::string> RandomShapeNames();
absl::StatusOr<ModelConfig> RandomShapeConfig(const std::string& shape);

// Tensors are created on first Get() in `dtype` (F32/F16/BF16), deterministic in
// (seed, tensor name).
std::unique_ptr<TensorSource> MakeRandomSource(const ModelConfig& config, DType dtype,
                                               uint64_t seed);

// A synthetic spm vocabulary of config.vocab_size tokens: <unk>, <s>, </s>, 256 byte
// tokens, then words "▁w<N>", so any id decodes to readable text.
VocabData RandomVocab(int32_t vocab_size);

}  // namespace compressd
