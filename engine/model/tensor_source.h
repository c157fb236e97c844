// TensorSource: where a model's tensors come from (safetensors single/sharded, GGUF,
// a compressed checkpoint, or random weights). Names are Hugging Face names
// ("model.layers.0.self_attn.q_proj.weight"); a GGUF source maps its names to these.
#pragma once

#include <string>
#include <vector>

#include "engine/core/status.h"
#include "engine/core/tensor.h"

namespace compressd {

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual std::vector<std::string> Names() const = 0;
  virtual bool Has(const std::string& name) const = 0;
  // NOT_FOUND naming the tensor when absent.
  virtual absl::StatusOr<TensorView> Get(const std::string& name) const = 0;
  // Human-readable origin for error messages ("/path/model.safetensors").
  virtual std::string Describe() const = 0;
};

}  // namespace compressd
