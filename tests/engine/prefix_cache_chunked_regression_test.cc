// Regression (found by tests/soak FaultTest.ClientsDisconnectMidStream: compressd serve
// segfaulted in BlockPool::SetHash under 32 concurrent 50-token prompts): with prefix
// caching on, the hashes of a waiting sequence's full prompt blocks are computed before
// admission, and after a chunked prefill step the engine registered *all* of them in the
// prefix cache, indexing s.blocks past the blocks allocated so far (out of bounds) and
// publishing blocks whose KV was not yet computed. Greedy output with chunked prefill and
// prefix caching must match the output without prefix caching, and the engine must
// survive repeated identical prompts.
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "gtest/gtest.h"

namespace compressd {
namespace {

std::vector<int32_t> Generate(Engine& engine, const std::vector<int32_t>& prompt,
                              const std::string& id) {
  GenerationRequest req;
  req.request_id = id;
  req.prompt_tokens = prompt;
  req.max_tokens = 8;
  req.sampling.temperature = 0;
  req.ignore_eos = true;
  auto done = std::make_shared<std::promise<std::vector<int32_t>>>();
  auto out = std::make_shared<std::vector<int32_t>>();
  const absl::Status st = engine.Submit(std::move(req), [done, out](GenerationEvent&& ev) {
    out->insert(out->end(), ev.token_ids.begin(), ev.token_ids.end());
    if (ev.finished) done->set_value(*out);
  });
  EXPECT_TRUE(st.ok()) << st;
  if (!st.ok()) return {};
  return done->get_future().get();
}

std::unique_ptr<Engine> MakeEngine(bool prefix_caching) {
  EngineOptions o;
  o.model = "random:tiny";
  o.threads = 1;
  o.max_batch_tokens = 16;  // a 100-token prompt is prefilled in 7 chunks
  o.kv_block_size = 16;
  o.prefix_caching = prefix_caching;
  auto e = Engine::Create(o);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? *std::move(e) : nullptr;
}

TEST(PrefixCacheChunkedRegressionTest, ChunkedPrefillMatchesNoCache) {
  std::vector<int32_t> prompt;
  for (int i = 0; i < 100; ++i) prompt.push_back(3 + (i * 37) % 500);
  auto reference_engine = MakeEngine(false);
  ASSERT_NE(reference_engine, nullptr);
  const std::vector<int32_t> reference = Generate(*reference_engine, prompt, "ref");
  ASSERT_EQ(reference.size(), 8u);

  auto engine = MakeEngine(true);
  ASSERT_NE(engine, nullptr);
  // First request fills the cache chunk by chunk; later ones hit it (fully or partly).
  for (int round = 0; round < 4; ++round) {
    EXPECT_EQ(Generate(*engine, prompt, "r" + std::to_string(round)), reference)
        << "round " << round;
  }
  // Two identical prompts admitted together.
  std::vector<int32_t> a, b;
  std::thread ta([&] { a = Generate(*engine, prompt, "a"); });
  std::thread tb([&] { b = Generate(*engine, prompt, "b"); });
  ta.join();
  tb.join();
  EXPECT_EQ(a, reference);
  EXPECT_EQ(b, reference);
  engine->Shutdown();
}

}  // namespace
}  // namespace compressd
