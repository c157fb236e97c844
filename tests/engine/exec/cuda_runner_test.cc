// The CUDA model runner against the CPU runner (in fp32 over the dequantized model): a ragged prefill
// of three sequences (eager launches), then decode steps of the three together (replayed
// CUDA graphs), logits compared row by row. Dense fp16 on kdocs-7m (real weights, GQA,
// head_dim 32), and the fused W4A16 / W8A16 paths, per-row int8 and low-rank on a random
// SmolLM2-135M shape. Skips without CUDA compiled in or without a GPU.
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/core/backend.h"
#include "engine/compress/linear.h"
#include "engine/core/thread_pool.h"
#include "engine/exec/runner.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/model_loader.h"
#include "gtest/gtest.h"
#include "kernels/gemm.h"
#include "tests/util/test_env.h"

#if defined(COMPRESSD_HAVE_CUDA)
#include "engine/exec/cuda/cuda_runner.h"
#endif

namespace compressd {
namespace {

#if defined(COMPRESSD_HAVE_CUDA)

struct Side {
  std::unique_ptr<KvCache> cache;
  std::vector<std::vector<int32_t>> tables;  // per sequence
};

Side MakeSide(const Model& m, int n_seqs, int blocks_per_seq) {
  const ModelConfig& c = m.config;
  KvGeometry g{c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim, 16};
  auto codec = MakeKvCodec("fp16", g);
  EXPECT_TRUE(codec.ok()) << codec.status();
  const size_t bb = (*codec)->LayerBlockBytes() * g.n_layers;
  Side s;
  s.cache = *KvCache::Create(std::move(*codec), (n_seqs * blocks_per_seq + 2) * bb);
  for (int i = 0; i < n_seqs; ++i) {
    std::vector<int32_t> t;
    for (int b = 0; b < blocks_per_seq; ++b) t.push_back(s.cache->pool().Allocate());
    s.tables.push_back(t);
  }
  return s;
}

double RelErr(const float* got, const float* want, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double{got[i]} - want[i];
    num += d * d;
    den += double{want[i]} * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

int Argmax(const float* row, int64_t n) {
  int best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (row[i] > row[best]) best = static_cast<int>(i);
  }
  return best;
}

// The function the GPU computes, in fp32 on the CPU: every linear layer of `m`
// dequantized to a dense fp32 matrix (low-rank factors multiplied out), the embedding rows
// as the model reads them. The CPU runner over this model is the oracle of the CUDA runner
// over `m` (the CPU's own quantized kernels may round activations differently, e.g. W4A8).
TensorView F32Tensor(std::vector<float> v, std::vector<int64_t> shape) {
  auto owner = std::make_shared<std::vector<float>>(std::move(v));
  TensorView t;
  t.dtype = DType::kF32;
  t.shape = std::move(shape);
  t.data = owner->data();
  t.bytes = owner->size() * sizeof(float);
  t.owner = owner;
  return t;
}

std::vector<float> DenseRows(const Linear& l) {
  const int64_t rows = l.w.rows, cols = l.w.cols;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  kernels::DequantizeRows(l.w, 0, rows, w.data());
  if (!l.first) return w;
  const std::vector<float> v = DenseRows(*l.first);  // [rank][in]
  const int64_t in = l.first->w.cols;
  std::vector<float> out(static_cast<size_t>(rows * in), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < cols; ++k) {
      const float a = w[r * cols + k];
      for (int64_t c = 0; c < in; ++c) out[r * in + c] += a * v[k * in + c];
    }
  }
  return out;
}

Linear DenseCopy(const Linear& l) {
  auto made = MakeDenseLinear(F32Tensor(DenseRows(l), {l.rows(), l.cols()}), DType::kF32);
  EXPECT_TRUE(made.ok()) << made.status();
  made->bias = l.bias;
  return *made;
}

std::shared_ptr<Model> DequantizedCopy(const Model& m) {
  auto d = std::make_shared<Model>();
  d->id = m.id + " (dequantized)";
  d->config = m.config;
  d->tokenizer = m.tokenizer;
  d->source = m.source;
  const int64_t H = m.config.hidden_size, V = m.config.vocab_size;
  std::vector<float> embed(static_cast<size_t>(V * H));
  for (int64_t t = 0; t < V; ++t) EmbedToken(m.weights, H, static_cast<int32_t>(t), embed.data() + t * H);
  d->weights.embed = F32Tensor(std::move(embed), {V, H});
  d->weights.final_norm = m.weights.final_norm;
  for (const LayerWeights& l : m.weights.layers) {
    LayerWeights c;
    c.attn_norm = l.attn_norm;
    c.ffn_norm = l.ffn_norm;
    c.q = DenseCopy(l.q);
    c.k = DenseCopy(l.k);
    c.v = DenseCopy(l.v);
    c.o = DenseCopy(l.o);
    c.gate = DenseCopy(l.gate);
    c.up = DenseCopy(l.up);
    c.down = DenseCopy(l.down);
    d->weights.layers.push_back(std::move(c));
  }
  d->weights.lm_head = DenseCopy(m.weights.lm_head);
  return d;
}

// Runs both runners over a ragged prefill and `decode_steps` batched decode steps and
// checks every logits row within `tol` (relative L2 error).
void CompareRunners(const std::string& model_spec, const std::string& weights, double tol,
                    bool expect_fused = true, double min_agree = 0.95) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  LoadOptions lo;
  lo.model = model_spec;
  lo.weights = weights;
  auto loaded = LoadModel(lo);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  std::shared_ptr<const Model> model = *loaded;
  const ModelConfig& c = model->config;
  const int V = c.vocab_size;
  constexpr int kSeqs = 3, kDecode = 5, kBlocks = 3;
  const int lens[kSeqs] = {5, 9, 13};
  const int32_t ctx = kBlocks * 16;

  ThreadPool pool(4);
  Side cpu = MakeSide(*model, kSeqs, kBlocks), gpu = MakeSide(*model, kSeqs, kBlocks);
  ModelRunner cpu_runner(DequantizedCopy(*model), cpu.cache.get(), &pool, ctx);
  auto gr = MakeCudaRunner(model, gpu.cache.get(), ctx, "cuda:0");
  ASSERT_TRUE(gr.ok()) << gr.status();
  CudaModelRunner& gpu_runner = **gr;

  std::mt19937 rng(7);
  std::vector<std::vector<int32_t>> toks(kSeqs);
  for (int s = 0; s < kSeqs; ++s) {
    for (int i = 0; i < lens[s]; ++i) toks[s].push_back(static_cast<int32_t>(rng() % V));
  }
  auto batch_for = [&](Side& side, bool prefill) {
    std::vector<BatchEntry> b(kSeqs);
    for (int s = 0; s < kSeqs; ++s) {
      const int n = static_cast<int>(toks[s].size());
      b[s].tokens = prefill ? toks[s].data() : toks[s].data() + n - 1;
      b[s].n_tokens = prefill ? n : 1;
      b[s].start_pos = prefill ? 0 : n - 1;
      b[s].block_table = side.tables[s].data();
      b[s].n_blocks = kBlocks;
      b[s].logits = prefill ? LogitsMode::kAll : LogitsMode::kLast;
    }
    return b;
  };

  double worst = 0;
  int agree = 0, total = 0;
  for (int step = 0; step <= kDecode; ++step) {
    const bool prefill = step == 0;
    int64_t rows_c = 0, rows_g = 0;
    const float* lc = cpu_runner.Forward(batch_for(cpu, prefill), &rows_c);
    std::vector<float> want(lc, lc + rows_c * V);
    auto lg = gpu_runner.Forward(batch_for(gpu, prefill), &rows_g);
    ASSERT_TRUE(lg.ok()) << lg.status();
    ASSERT_EQ(rows_g, rows_c);
    for (int64_t r = 0; r < rows_c; ++r) {
      const double e = RelErr(*lg + r * V, want.data() + r * V, V);
      worst = std::max(worst, e);
      EXPECT_LT(e, tol) << weights << " step " << step << " row " << r;
      agree += Argmax(*lg + r * V, V) == Argmax(want.data() + r * V, V);
      ++total;
    }
    // Next tokens: the CPU's greedy choice, fed to both.
    int64_t r = 0;
    for (int s = 0; s < kSeqs; ++s) {
      r += prefill ? lens[s] : 1;
      toks[s].push_back(Argmax(want.data() + (r - 1) * V, V));
    }
  }
  EXPECT_EQ(gpu_runner.eager_steps(), 1);
  EXPECT_EQ(gpu_runner.graph_steps(), kDecode);
  // Greedy choices agree except where two logits are within rounding of each other.
  EXPECT_GE(agree, min_agree * total) << weights;
  // Dense formats and the fused integer formats upload no dequantized copies.
  if (expect_fused) {
    EXPECT_EQ(gpu_runner.fp16_fallback_layers(), 0) << weights;
  } else {
    EXPECT_GT(gpu_runner.fp16_fallback_layers(), 0) << weights;
  }
  std::printf("[ %s %s ] worst relative L2 error %.3g, argmax agreement %d/%d\n",
              model_spec.c_str(), weights.c_str(), worst, agree, total);
}

TEST(CudaRunner, Kdocs7mF16MatchesCpu) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  CompareRunners(dir, "f16", 5e-3);
}

// Quantized formats on kdocs-7m: both runners share the compressed Model, so the only
// differences are fp16 activations and fp16 dequantisation on the GPU. (Random-weight
// models amplify those roundings layer over layer, so real weights are used here.)
// kdocs-7m's FFN width 704 is not a multiple of 128: with g128 the down projection takes
// the split-group path (CUDA group 64, exact), the other layers the plain g128 path.
TEST(CudaRunner, Kdocs7mInt4G128FusedMatchesCpu) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  CompareRunners(dir, "int4-g128", 5e-3);
}

TEST(CudaRunner, Kdocs7mInt4G64FusedMatchesCpu) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  CompareRunners(dir, "int4-g64", 5e-3);
}

TEST(CudaRunner, Kdocs7mInt8GroupFusedMatchesCpu) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  CompareRunners(dir, "int8-g128", 5e-3);
}

TEST(CudaRunner, Kdocs7mInt8RowFusedMatchesCpu) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  CompareRunners(dir, "int8", 5e-3);
}

TEST(CudaRunner, Kdocs7mLowRankTwoGemmsMatchesCpu) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  CompareRunners(dir, "lowrank-0.5", 5e-3);
}

TEST(CudaRunner, Kdocs7mSpqrFallsBackToF16AndMatchesCpu) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  CompareRunners(dir, "spqr4", 5e-3, /*expect_fused=*/false);
}

// SmolLM2's 576 columns: every g128 layer takes the split-group path. Random weights:
// compared by greedy agreement and a loose bound.
TEST(CudaRunner, SmolLM2Int4PaddedColumnsRunFused) {
  CompareRunners("random:smollm2-135m", "int4-g128", 0.3, true, 0.8);
}

TEST(CudaRunner, UnsupportedKvCodecIsAClearError) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  LoadOptions lo;
  lo.model = "random:smollm2-135m";
  lo.weights = "f16";
  auto model = LoadModel(lo);
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& c = (*model)->config;
  KvGeometry g{c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim, 16};
  auto codec = MakeKvCodec("int4", g);
  ASSERT_TRUE(codec.ok()) << codec.status();
  auto cache = KvCache::Create(std::move(*codec), 64 << 20);
  ASSERT_TRUE(cache.ok());
  auto r = MakeCudaRunner(*model, cache->get(), 64, "cuda:0");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(r.status().message().find("int4"), std::string::npos) << r.status();
}

#else

TEST(CudaRunner, NeedsACudaBuild) { GTEST_SKIP() << "built without CUDA"; }

#endif

}  // namespace
}  // namespace compressd
