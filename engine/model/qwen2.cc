// Qwen2: the Llama block with biases on q/k/v projections.
#include "engine/model/architecture.h"

namespace compressd {

ArchitectureSpec Qwen2Architecture() {
  return {"Qwen2ForCausalLM",
          {"qwen2"},
          [](const TensorSource& s, const LinearFactory& f, Model* m) {
            return BuildLlamaFamily(s, f, /*qkv_bias=*/true, m);
          }};
}

}  // namespace compressd
