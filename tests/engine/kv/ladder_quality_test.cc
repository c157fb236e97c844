// Quality figure of the KV pressure ladder's recompression step: perplexity on kdocs-7m's
// eval.txt when every cold block is demoted (int4 -> int2 for all blocks but the first and the
// newest full one, re-demoted after every 16-token step, i.e. the most the ladder can ever do
// to a sequence) against plain int4 and plain int2, all run the same way: chunks of 256 tokens
// (BOS first), 16 tokens per Forward (as decode sees blocks), the second half scored.
// Prints the figures; asserts only that demotion happened and the perplexities are finite.
// COMPRESSD_LADDER_QUALITY_CHUNKS raises the chunk count (default 4). Skipped without the model.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/core/thread_pool.h"
#include "engine/exec/runner.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/model_loader.h"
#include "engine/model/tokenizer.h"
#include "engine/sched/ladder.h"
#include "gtest/gtest.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

struct Ppl {
  double ppl = 0;
  double kl = 0;    // mean KL(P_fp32 || P) over the scored positions
  double top1 = 0;  // fraction of scored positions whose argmax equals fp32's
  int64_t demotions = 0;
  int64_t scored = 0;
};

Ppl RunPpl(std::shared_ptr<Model> model, const std::vector<int32_t>& ids,
           const std::string& codec_name, bool demote, int chunks, ThreadPool* pool,
           std::vector<float>* ref_logp, bool record) {
  const ModelConfig& c = model->config;
  const int ctx = std::min<int>(256, c.max_position_embeddings), bs = 16, step = 16;
  KvGeometry g;
  g.n_layers = c.num_hidden_layers;
  g.n_heads = c.num_attention_heads;
  g.n_kv_heads = c.num_key_value_heads;
  g.head_dim = c.head_dim;
  g.block_size = bs;
  auto codec = MakeKvCodec(codec_name, g);
  EXPECT_TRUE(codec.ok()) << codec.status();
  const int nblocks = ctx / bs;
  const size_t block_bytes = (*codec)->LayerBlockBytes() * g.n_layers;
  auto cache = KvCache::Create(std::move(*codec), (nblocks + 1) * block_bytes);
  EXPECT_TRUE(cache.ok());
  KvCache& kv = **cache;
  ModelRunner runner(model, &kv, pool, ctx);
  const int32_t V = c.vocab_size;
  const int32_t bos = model->tokenizer->bos_id();
  Ppl r;
  double nll = 0;
  std::vector<int32_t> chunk(ctx);
  for (int ch = 0; ch < chunks; ++ch) {
    std::copy(ids.begin() + static_cast<size_t>(ch) * ctx,
              ids.begin() + static_cast<size_t>(ch + 1) * ctx, chunk.begin());
    if (bos >= 0) chunk[0] = bos;
    std::vector<int32_t> table;
    int32_t demoted = 0;
    for (int p0 = 0; p0 < ctx; p0 += step) {
      while (static_cast<int>(table.size()) + demoted < (p0 + step + bs - 1) / bs) {
        table.push_back(kv.pool().Allocate());
      }
      BatchEntry e;
      e.tokens = chunk.data() + p0;
      e.n_tokens = step;
      e.start_pos = p0;
      e.block_table = table.data();
      e.n_blocks = static_cast<int32_t>(table.size());
      e.n_demoted = demoted;
      e.logits = LogitsMode::kAll;
      int64_t rows = 0;
      const float* logits = runner.Forward({e}, &rows);
      for (int i = 0; i < step; ++i) {
        const int pos = p0 + i;
        if (pos < ctx / 2 || pos + 1 >= ctx) continue;
        const float* lg = logits + static_cast<size_t>(i) * V;
        double mx = lg[0];
        for (int v = 1; v < V; ++v) mx = std::max<double>(mx, lg[v]);
        double s = 0;
        for (int v = 0; v < V; ++v) s += std::exp(lg[v] - mx);
        const double lse = mx + std::log(s);
        nll += lse - lg[chunk[pos + 1]];
        if (record) {
          for (int v = 0; v < V; ++v) ref_logp->push_back(static_cast<float>(lg[v] - lse));
          r.top1 += 1;  // the reference agrees with itself
        } else {
          const float* ref = ref_logp->data() + static_cast<size_t>(r.scored) * V;
          double kl = 0;
          int am = 0, ram = 0;
          for (int v = 0; v < V; ++v) {
            kl += std::exp(double{ref[v]}) * (ref[v] - (lg[v] - lse));
            if (lg[v] > lg[am]) am = v;
            if (ref[v] > ref[ram]) ram = v;
          }
          r.kl += kl;
          r.top1 += am == ram ? 1 : 0;
        }
        ++r.scored;
      }
      if (!demote) continue;
      std::vector<LadderBlock> info(table.size());
      for (size_t i = 0; i < table.size(); ++i) info[i].demoted = kv.pool().Demoted(table[i]);
      const auto merges = PlanBlockMerges(LadderConfig{}, info, (p0 + step) / bs, 1 << 20);
      for (auto it = merges.rbegin(); it != merges.rend(); ++it) {
        const int32_t a = table[*it], b = table[*it + 1];
        for (int l = 0; l < g.n_layers; ++l) {
          kv.codec().Demote(l, kv.Block(a, l), kv.Block(b, l), kv.Block(a, l));
        }
        kv.pool().SetDemoted(a);
        kv.pool().DecRef(b);
        table.erase(table.begin() + *it + 1);
        ++demoted;
        ++r.demotions;
      }
    }
    for (int32_t b : table) kv.pool().DecRef(b);
  }
  r.ppl = std::exp(nll / static_cast<double>(r.scored));
  r.kl /= static_cast<double>(r.scored);
  r.top1 /= static_cast<double>(r.scored);
  return r;
}

TEST(KvLadderQuality, PerplexityWithEveryColdBlockDemoted) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  REQUIRE_SHARED(text_file, "models/kdocs-7m/eval.txt");
  int chunks = 4;
  if (const char* e = std::getenv("COMPRESSD_LADDER_QUALITY_CHUNKS")) chunks = std::atoi(e);
  LoadOptions lo;
  lo.model = dir;
  lo.weights = "f32";
  lo.threads = 2;
  auto model = LoadModel(lo);
  ASSERT_TRUE(model.ok()) << model.status();
  std::ifstream in(text_file, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::vector<int32_t> ids = (*model)->tokenizer->Encode(ss.str(), /*add_special=*/true);
  chunks = std::min<int>(chunks, static_cast<int>(ids.size() / 256));
  ThreadPool pool(2);
  std::vector<float> ref;
  const Ppl fp32 = RunPpl(*model, ids, "fp32", false, chunks, &pool, &ref, true);
  const Ppl i8 = RunPpl(*model, ids, "int8", false, chunks, &pool, &ref, false);
  const Ppl i8d = RunPpl(*model, ids, "int8", true, chunks, &pool, &ref, false);
  const Ppl i4 = RunPpl(*model, ids, "int4", false, chunks, &pool, &ref, false);
  const Ppl i4d = RunPpl(*model, ids, "int4", true, chunks, &pool, &ref, false);
  const Ppl i2 = RunPpl(*model, ids, "int2", false, chunks, &pool, &ref, false);
  std::printf(
      "[ ladder quality ] kdocs-7m eval.txt, %d chunks x 256, %lld tokens scored "
      "(ppl, mean KL vs fp32 KV, top-1 agreement with fp32 KV)\n",
      chunks, static_cast<long long>(fp32.scored));
  auto row = [](const char* name, const Ppl& p) {
    std::printf("  %-24s ppl %8.4f  KL %.5f  top1 %.4f  demotions %lld\n", name, p.ppl, p.kl,
                p.top1, static_cast<long long>(p.demotions));
  };
  row("fp32", fp32);
  row("int8", i8);
  row("int8, all cold -> int4", i8d);
  row("int4", i4);
  row("int4, all cold -> int2", i4d);
  row("int2", i2);
  EXPECT_GT(i4d.demotions, 0);
  for (double p : {fp32.ppl, i8.ppl, i8d.ppl, i4.ppl, i4d.ppl, i2.ppl}) {
    EXPECT_TRUE(std::isfinite(p) && p >= 1.0) << p;
  }
}

}  // namespace
}  // namespace compressd
