#include "tests/util/model_logits.h"

#include "engine/core/thread_pool.h"
#include "engine/exec/runner.h"
#include "engine/kv/kv_cache.h"
#include "gtest/gtest.h"

namespace compressd::testing {

std::vector<float> PrefillLogits(std::shared_ptr<const Model> model,
                                 const std::vector<int32_t>& toks) {
  ThreadPool pool(2);
  const ModelConfig& c = model->config;
  KvGeometry g{c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim, 16};
  auto codec = MakeKvCodec("fp32", g);
  EXPECT_TRUE(codec.ok());
  const size_t bb = (*codec)->LayerBlockBytes() * g.n_layers;
  auto cache = *KvCache::Create(std::move(*codec), 4 * bb);
  std::vector<int32_t> blocks;
  for (int i = 0; i < 4; ++i) blocks.push_back(cache->pool().Allocate());
  ModelRunner runner(model, cache.get(), &pool, 64);
  BatchEntry e;
  e.tokens = toks.data();
  e.n_tokens = static_cast<int32_t>(toks.size());
  e.block_table = blocks.data();
  e.n_blocks = 4;
  e.logits = LogitsMode::kAll;
  int64_t rows = 0;
  const float* p = runner.Forward({e}, &rows);
  return std::vector<float>(p, p + rows * c.vocab_size);
}

}  // namespace compressd::testing
