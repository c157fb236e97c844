// Sharded (N = 2, 4 ranks on threads with the local communicator) == unsharded: the whole
// random:tiny stack (embedding, 2 decoder layers, final norm, column-parallel lm_head +
// all-gather) against the engine's CPU ModelRunner.
#include "engine/exec/tensor_parallel.h"

#include <cmath>
#include <thread>

#include "engine/exec/runner.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/model_loader.h"
#include "gtest/gtest.h"
#include "kernels/ops.h"

namespace compressd {
namespace {

std::shared_ptr<Model> TinyModel() {
  LoadOptions o;
  o.model = "random:tiny";
  o.weights = "f32";
  o.threads = 1;
  auto m = LoadModel(o);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : nullptr;
}

std::vector<float> ReferenceLogits(std::shared_ptr<Model> model, const std::vector<int32_t>& toks) {
  const ModelConfig& c = model->config;
  KvGeometry g;
  g.n_layers = c.num_hidden_layers;
  g.n_heads = c.num_attention_heads;
  g.n_kv_heads = c.num_key_value_heads;
  g.head_dim = c.head_dim;
  g.block_size = 16;
  auto codec = MakeKvCodec("fp32", g);
  EXPECT_TRUE(codec.ok());
  auto cache = KvCache::Create(std::move(*codec), 64 << 20);
  EXPECT_TRUE(cache.ok());
  std::vector<int32_t> table;
  for (size_t i = 0; i < (toks.size() + 15) / 16; ++i) table.push_back((*cache)->pool().Allocate());
  ThreadPool pool(1);
  ModelRunner runner(model, cache->get(), &pool, 256);
  BatchEntry e;
  e.tokens = toks.data();
  e.n_tokens = static_cast<int32_t>(toks.size());
  e.block_table = table.data();
  e.n_blocks = static_cast<int32_t>(table.size());
  e.logits = LogitsMode::kAll;
  int64_t rows = 0;
  const float* logits = runner.Forward({e}, &rows);
  EXPECT_EQ(rows, static_cast<int64_t>(toks.size()));
  return std::vector<float>(logits, logits + rows * c.vocab_size);
}

std::vector<float> ShardedLogits(const Model& model, const std::vector<int32_t>& toks, int size) {
  const ModelConfig& c = model.config;
  const int64_t T = static_cast<int64_t>(toks.size()), H = c.hidden_size, V = c.vocab_size;
  std::vector<float> rope_cos, rope_sin;
  EXPECT_TRUE(BuildRopeTables(c, 256, &rope_cos, &rope_sin).ok());
  auto comms = MakeLocalCommunicators(size);
  std::vector<std::vector<float>> logits(size);
  std::vector<absl::Status> status(size);
  auto rank_main = [&](int rank) {
    absl::Status st = [&]() -> absl::Status {
      Communicator& comm = *comms[rank];
      ThreadPool pool(1);
      std::vector<float> x(T * H);
      for (int64_t t = 0; t < T; ++t) EmbeddingRow(model.weights.embed, H, toks[t], x.data() + t * H);
      for (const LayerWeights& lw : model.weights.layers) {
        ASSIGN_OR_RETURN(TpLayer layer, ShardDecoderLayer(lw, c, rank, size));
        RETURN_IF_ERROR(TpDecoderLayerForward(layer, c, comm, x.data(), T, rope_cos, rope_sin, pool));
      }
      std::vector<float> xn(T * H);
      for (int64_t t = 0; t < T; ++t) {
        kernels::RmsNorm(x.data() + t * H, model.weights.final_norm.data(), H, c.rms_norm_eps,
                         xn.data() + t * H);
      }
      ASSIGN_OR_RETURN(Linear head, ShardColumnParallel(model.weights.lm_head, rank, size, 1));
      const int64_t vs = head.rows();
      std::vector<float> part(T * vs), gathered(size * T * vs), scratch;
      LinearForward(head, xn.data(), T, part.data(), vs, pool, &scratch);
      RETURN_IF_ERROR(comm.AllGather(part.data(), T * vs, gathered.data()));
      logits[rank].resize(T * V);
      for (int r = 0; r < size; ++r) {
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t i = 0; i < vs; ++i) {
            logits[rank][t * V + r * vs + i] = gathered[(r * T + t) * vs + i];
          }
        }
      }
      return absl::OkStatus();
    }();
    status[rank] = st;
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) threads.emplace_back(rank_main, r);
  for (auto& t : threads) t.join();
  for (int r = 0; r < size; ++r) EXPECT_TRUE(status[r].ok()) << status[r];
  for (int r = 1; r < size; ++r) EXPECT_EQ(logits[r], logits[0]) << "ranks disagree";
  return logits[0];
}

class TensorParallelTest : public ::testing::TestWithParam<int> {};

TEST_P(TensorParallelTest, ShardedStackMatchesCpuRunner) {
  std::shared_ptr<Model> model = TinyModel();
  ASSERT_NE(model, nullptr);
  std::vector<int32_t> toks;
  for (int i = 0; i < 37; ++i) toks.push_back((i * 97 + 5) % model->config.vocab_size);
  const std::vector<float> ref = ReferenceLogits(model, toks);
  const std::vector<float> got = ShardedLogits(*model, toks, GetParam());
  ASSERT_EQ(got.size(), ref.size());
  double max_err = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double err = std::fabs(got[i] - ref[i]) / std::max(1.0, std::fabs(double{ref[i]}));
    max_err = std::max(max_err, err);
  }
  EXPECT_LE(max_err, 1e-5) << "N=" << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Ranks, TensorParallelTest, ::testing::Values(1, 2, 4));

TEST(TensorParallel, ShardingErrorsNameTheShape) {
  std::shared_ptr<Model> model = TinyModel();
  ASSERT_NE(model, nullptr);
  // tiny has 4 query heads: 3 ranks cannot hold whole heads.
  auto s = ShardDecoderLayer(model->weights.layers[0], model->config, 0, 3);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  auto cols = ShardColumnParallel(model->weights.layers[0].gate, 0, 5, 1);  // 172 rows
  EXPECT_EQ(cols.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TensorParallel, ColumnAndRowShardsRecomposeTheLinear) {
  std::shared_ptr<Model> model = TinyModel();
  ASSERT_NE(model, nullptr);
  const Linear& w = model->weights.layers[0].up;  // [172][64]
  ThreadPool pool(1);
  std::vector<float> x(3 * w.cols());
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i);
  std::vector<float> ref(3 * w.rows()), scratch;
  LinearForward(w, x.data(), 3, ref.data(), w.rows(), pool, &scratch);
  for (int size : {2, 4}) {
    std::vector<float> sum(3 * w.rows(), 0.0f);
    for (int r = 0; r < size; ++r) {
      auto col = ShardColumnParallel(w, r, size, 1);
      ASSERT_TRUE(col.ok()) << col.status();
      std::vector<float> y(3 * col->rows());
      LinearForward(*col, x.data(), 3, y.data(), col->rows(), pool, &scratch);
      for (int t = 0; t < 3; ++t) {
        for (int64_t i = 0; i < col->rows(); ++i) {
          EXPECT_NEAR(y[t * col->rows() + i], ref[t * w.rows() + r * col->rows() + i], 1e-5);
        }
      }
      auto row = ShardRowParallel(w, r, size, 1);
      ASSERT_TRUE(row.ok()) << row.status();
      std::vector<float> xs(3 * row->cols()), p(3 * w.rows());
      for (int t = 0; t < 3; ++t) {
        for (int64_t c = 0; c < row->cols(); ++c) {
          xs[t * row->cols() + c] = x[t * w.cols() + r * row->cols() + c];
        }
      }
      LinearForward(*row, xs.data(), 3, p.data(), w.rows(), pool, &scratch);
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += p[i];
    }
    for (size_t i = 0; i < sum.size(); ++i) EXPECT_NEAR(sum[i], ref[i], 1e-5);
  }
}

}  // namespace
}  // namespace compressd
