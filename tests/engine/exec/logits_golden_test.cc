// Logits of every position for a fixed prompt match an independent float64 numpy
// reference (scripts/reference_logits.py) within 1e-4 relative, for stories260K (ragged
// head_dim 8, FFN 172) and kdocs-7m (GQA). Also: prefill-then-decode gives the same logits
// as one long prefill. Skipped when ../shared is absent.
#include <cmath>
#include <memory>
#include <vector>

#include "engine/core/thread_pool.h"
#include "engine/exec/runner.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/model_loader.h"
#include "gtest/gtest.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

struct Golden {
  int pos;
  double lse;
  int argmax;
  std::vector<double> vals;  // logits at kIds
};
const int kIds[] = {0, 1, 2, 3, 13, 29, 100, 257, 300, 400, 511};

// /usr/bin/python3 scripts/reference_logits.py ../shared/models/stories260K
//     1 403 407 261 378 10 287 480 29 13 260
const std::vector<int32_t> kStoriesPrompt = {1, 403, 407, 261, 378, 10, 287, 480, 29, 13, 260};
const std::vector<Golden> kStoriesGolden = {
  {0, 17.2672586, 403, {-6.22291391, 8.40434166, -6.22373887, -6.22254398, 6.44980654, -6.22237307, -6.22272232, -6.22296977, 3.69151616, 3.95394716, -4.40551929}},
  {1, 18.4774973, 407, {-9.58945649, 3.84127574, -9.59053338, -9.58919411, -1.48157508, -9.58934944, -9.58889435, -9.58964255, 3.33134749, 2.10201914, -7.43573569}},
  {2, 17.1490755, 261, {-12.1410982, 1.77624712, -12.1429506, -12.1410198, -4.12607896, -12.1412318, -12.1395021, -12.1418452, 6.07368175, 2.46318353, -8.97455106}},
  {3, 18.8751116, 378, {-6.71425485, -6.05302697, -6.71503879, -6.71449429, -0.68882887, -6.71482073, -6.71431856, -6.71494824, 5.92582505, 6.75327018, -5.0477028}},
  {4, 17.8311009, 432, {-10.1365784, -5.32946498, -10.1380864, -10.1368561, -1.14056483, -10.1378769, -10.1365027, -10.1373041, 0.997020072, 4.89747239, -8.07628194}},
  {5, 13.9886903, 429, {-15.8032223, 0.991691728, -15.8030341, -15.803827, 2.046288, -15.8033067, -15.8025675, -15.8033629, 7.16328576, 7.45055387, -12.2970952}},
  {6, 15.4323845, 412, {-13.1400973, 0.423591459, -13.1405342, -13.1404414, 0.366144729, -13.1406665, -13.1388536, -13.1391261, -0.881024464, 0.767031902, -10.6484548}},
  {7, 12.5067501, 263, {-12.5270047, 4.41076087, -12.5271457, -12.5267736, 2.10536348, -12.5269917, -12.5261352, -12.5263539, 5.2958657, 5.26725824, -9.77336984}},
  {8, 13.4834041, 419, {-13.635755, 3.42064612, -13.6359064, -13.6370455, 2.46972651, -13.6356995, -13.6353505, -13.6361839, 7.0248301, 5.93547297, -10.137175}},
  {9, 12.2345149, 441, {-6.48952048, 1.75043683, -6.48938217, -6.48949527, 3.12882759, -6.48917004, -6.48932889, -6.48999412, 3.44391887, -0.426649103, -6.03368197}},
  {10, 13.4033397, 276, {-16.3457978, -3.03040431, -16.3449305, -16.3458128, -4.28784887, -16.3451425, -16.3447284, -16.3457984, 5.01817627, 6.66167319, -13.2433248}},
};

// /usr/bin/python3 scripts/reference_logits.py ../shared/models/kdocs-7m 1 450 3012 77 1999 5 8 4000
const std::vector<int32_t> kKdocsPrompt = {1, 450, 3012, 77, 1999, 5, 8, 4000};
const std::vector<Golden> kKdocsGolden = {
  {0, 8.64344194, 4003, {-13.8733349, 1.98406407, -13.8724748, -13.9995777, 6.38020653, -13.8894466, -14.1036258, -13.5601012, -2.41348729, -2.65118251, -1.11696666}},
  {1, 7.65431218, 4024, {-11.815523, 0.816658212, -11.93653, -11.8633854, 4.69488359, -12.1258801, -12.1656218, -11.8423775, -0.588528714, -0.197565766, -1.1070922}},
  {2, 7.82342653, 13, {-10.5092488, 0.513720355, -10.4323893, -10.4548431, 5.03179022, -10.6825788, -10.7461906, -10.4820422, -1.51368666, -2.0680287, -0.438476581}},
  {3, 7.92734858, 291, {-8.72720005, 0.46910167, -8.60008087, -8.6497045, 4.10697315, -8.91435057, -8.92312323, -8.70900757, -0.793408619, -0.568683302, 0.0275513266}},
  {4, 8.64107024, 294, {-9.72857207, 0.886659393, -9.60426358, -9.44658639, 4.82299318, -9.52165306, -9.76203137, -9.7342158, 1.67260216, 2.65086484, 0.181927488}},
  {5, 7.97191566, 291, {-8.96910105, -0.00379340207, -8.82729956, -8.8866703, 4.22553188, -9.11876032, -9.13983702, -8.925185, -1.03682569, -0.458147545, 0.294142874}},
  {6, 8.02385462, 291, {-8.58255421, 0.0499766549, -8.41610881, -8.49143036, 4.03481707, -8.73157134, -8.75064965, -8.53746224, -0.875379328, 0.0826840151, 0.363482616}},
  {7, 8.89237798, 900, {-10.3194149, 1.44424873, -10.1597969, -10.2342937, 2.72061306, -10.3811391, -10.2942897, -10.415603, 3.69938514, 4.87515609, -1.46516939}},
};

struct Harness {
  std::shared_ptr<Model> model;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<KvCache> cache;
  std::unique_ptr<ModelRunner> runner;
  std::vector<int32_t> blocks;

  explicit Harness(const std::string& dir, const std::string& kv = "fp32") {
    LoadOptions lo;
    lo.model = dir;
    lo.weights = "f32";
    auto m = LoadModel(lo);
    EXPECT_TRUE(m.ok()) << m.status();
    model = *m;
    pool = std::make_unique<ThreadPool>(2);
    const ModelConfig& c = model->config;
    KvGeometry g{c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim, 16};
    auto codec = MakeKvCodec(kv, g);
    EXPECT_TRUE(codec.ok());
    const size_t bb = (*codec)->LayerBlockBytes() * g.n_layers;
    cache = *KvCache::Create(std::move(*codec), 8 * bb);
    for (int i = 0; i < 8; ++i) blocks.push_back(cache->pool().Allocate());
    runner = std::make_unique<ModelRunner>(model, cache.get(), pool.get(), 128);
  }

  // Logits of positions [start, start + n) fed with tokens[start...], KV for earlier
  // positions already cached.
  std::vector<float> Run(const std::vector<int32_t>& tokens, int start, int n) {
    BatchEntry e;
    e.tokens = tokens.data() + start;
    e.n_tokens = n;
    e.start_pos = start;
    e.block_table = blocks.data();
    e.n_blocks = static_cast<int32_t>(blocks.size());
    e.logits = LogitsMode::kAll;
    int64_t rows = 0;
    const float* p = runner->Forward({e}, &rows);
    return std::vector<float>(p, p + rows * model->config.vocab_size);
  }
};

void CheckGolden(const std::string& rel, const std::vector<int32_t>& prompt,
                 const std::vector<Golden>& golden) {
  const std::string dir = testing::SharedPath(rel);
  if (dir.empty()) GTEST_SKIP() << "../shared/" << rel << " is absent";
  Harness h(dir);
  const int V = h.model->config.vocab_size;
  std::vector<float> lg = h.Run(prompt, 0, static_cast<int>(prompt.size()));
  ASSERT_EQ(lg.size(), prompt.size() * V);
  for (const Golden& g : golden) {
    const float* row = lg.data() + static_cast<size_t>(g.pos) * V;
    double mx = row[0];
    int am = 0;
    for (int i = 1; i < V; ++i) {
      if (row[i] > mx) {
        mx = row[i];
        am = i;
      }
    }
    double s = 0;
    for (int i = 0; i < V; ++i) s += std::exp(row[i] - mx);
    EXPECT_NEAR(mx + std::log(s), g.lse, 1e-4 * std::fabs(g.lse)) << "pos " << g.pos;
    EXPECT_EQ(am, g.argmax) << "pos " << g.pos;
    size_t j = 0;
    for (int id : kIds) {
      if (id >= V) continue;
      // 1e-4 relative to the row's scale (logits near zero have no meaningful relative error).
      EXPECT_NEAR(row[id], g.vals[j], 1e-4 * std::max(1.0, std::fabs(g.vals[j])))
          << "pos " << g.pos << " id " << id;
      ++j;
    }
  }
}

TEST(LogitsGolden, Stories260KMatchesNumpyReference) {
  CheckGolden("models/stories260K", kStoriesPrompt, kStoriesGolden);
}

TEST(LogitsGolden, Kdocs7mMatchesNumpyReference) {
  CheckGolden("models/kdocs-7m", kKdocsPrompt, kKdocsGolden);
}

TEST(LogitsGolden, PrefillThenDecodeEqualsOneLongPrefill) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  const std::vector<int32_t>& p = kKdocsPrompt;
  const int n = static_cast<int>(p.size());
  Harness whole(dir);
  std::vector<float> a = whole.Run(p, 0, n);
  Harness split(dir);
  const int V = split.model->config.vocab_size;
  std::vector<float> b = split.Run(p, 0, 3);  // prefill 3, then decode one by one
  for (int t = 3; t < n; ++t) {
    std::vector<float> d = split.Run(p, t, 1);
    b.insert(b.end(), d.begin(), d.end());
  }
  ASSERT_EQ(a.size(), b.size());
  double max_rel = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_rel = std::max<double>(max_rel, std::fabs(a[i] - b[i]) / std::max(1.0f, std::fabs(a[i])));
  }
  EXPECT_LT(max_rel, 1e-5) << "over " << n << " positions x " << V << " logits";
}

}  // namespace
}  // namespace compressd
