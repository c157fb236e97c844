// Mistral: the Llama block; sliding-window attention is not applied (contexts served are
// within the window for the supported checkpoints; longer contexts are rejected at load).
#include "engine/model/architecture.h"

namespace compressd {

ArchitectureSpec MistralArchitecture() {
  return {"MistralForCausalLM",
          {"mistral"},
          [](const TensorSource& s, const LinearFactory& f, Model* m) {
            return BuildLlamaFamily(s, f, /*qkv_bias=*/false, m);
          }};
}

}  // namespace compressd
