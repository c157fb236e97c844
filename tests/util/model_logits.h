// Test helper: logits of every position of `tokens` (at most 64) for a loaded model, computed
// by one prefill through the real ModelRunner with an fp32 KV cache. [tokens][vocab].
#pragma once

#include <memory>
#include <vector>

#include "engine/model/model.h"

namespace compressd::testing {

std::vector<float> PrefillLogits(std::shared_ptr<const Model> model,
                                 const std::vector<int32_t>& tokens);

}  // namespace compressd::testing
