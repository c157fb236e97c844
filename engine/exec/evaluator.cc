#include "engine/exec/evaluator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_format.h"
#include "engine/exec/runner.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/model_loader.h"

namespace compressd {
namespace {

struct Side {
  std::shared_ptr<Model> model;
  std::unique_ptr<KvCache> cache;
  std::unique_ptr<ModelRunner> runner;
  std::vector<int32_t> blocks;
};

absl::StatusOr<Side> MakeSide(const EvalOptions& o, const std::string& weights,
                              const std::string& kv, ThreadPool* pool, int64_t weight_budget = 0) {
  Side s;
  LoadOptions lo;
  lo.model = o.model;
  lo.weights = weights;
  lo.weight_memory_budget = static_cast<uint64_t>(std::max<int64_t>(0, weight_budget));
  lo.calibration_file = o.calibration_file;
  lo.threads = pool->num_threads();
  lo.cpu_kernel_layouts = true;  // evaluated on this CPU's kernels
  ASSIGN_OR_RETURN(s.model, LoadModel(lo));
  const ModelConfig& c = s.model->config;
  if (o.context > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--context %d exceeds the model's max_position_embeddings %d", o.context,
        c.max_position_embeddings));
  }
  KvGeometry g;
  g.n_layers = c.num_hidden_layers;
  g.n_heads = c.num_attention_heads;
  g.n_kv_heads = c.num_key_value_heads;
  g.head_dim = c.head_dim;
  g.block_size = o.kv_block_size;
  ASSIGN_OR_RETURN(std::unique_ptr<KvCodec> codec, MakeKvCodec(kv, g));
  if (codec->NeedsCalibration()) {
    std::string calib = o.calibration_file;
    if (calib.empty()) {
      calib = o.model + "/calibration.txt";
      if (!std::ifstream(calib).good()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--kv-cache ", kv, " needs calibration text: pass --calibration-file (no ", calib,
            ")"));
      }
    }
    RETURN_IF_ERROR(CalibrateKvCodec(s.model, codec.get(), calib, o.context,
                                     o.kv_calibration_tokens, pool));
  }
  const int32_t nblocks = (o.context + g.block_size - 1) / g.block_size;
  const size_t block_bytes = codec->LayerBlockBytes() * g.n_layers;
  ASSIGN_OR_RETURN(s.cache, KvCache::Create(std::move(codec), (nblocks + 1) * block_bytes));
  for (int32_t i = 0; i < nblocks; ++i) s.blocks.push_back(s.cache->pool().Allocate());
  s.runner = std::make_unique<ModelRunner>(s.model, s.cache.get(), pool, o.context);
  return s;
}

void LogSoftmax(const float* x, int32_t n, std::vector<double>* out) {
  out->resize(n);
  double mx = x[0];
  for (int32_t i = 1; i < n; ++i) mx = std::max<double>(mx, x[i]);
  double s = 0;
  for (int32_t i = 0; i < n; ++i) s += std::exp(x[i] - mx);
  const double lse = mx + std::log(s);
  for (int32_t i = 0; i < n; ++i) (*out)[i] = x[i] - lse;
}

}  // namespace

absl::Status CalibrateKvCodec(std::shared_ptr<const Model> model, KvCodec* codec,
                              const std::string& text_file, int32_t context, int64_t max_tokens,
                              ThreadPool* pool) {
  if (!codec->NeedsCalibration()) return absl::OkStatus();
  std::ifstream in(text_file, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read calibration text ", text_file));
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<int32_t> ids = model->tokenizer->Encode(ss.str(), /*add_special=*/true);
  if (static_cast<int64_t>(ids.size()) > max_tokens) ids.resize(static_cast<size_t>(max_tokens));
  const int32_t n_ctx = std::min<int32_t>(context, model->config.max_position_embeddings);
  if (static_cast<int32_t>(ids.size()) < n_ctx) {
    return absl::InvalidArgumentError(absl::StrCat("calibration text ", text_file, " has ",
                                                   ids.size(), " tokens, fewer than ", n_ctx));
  }
  KvMoments moments;
  KvGeometry g = codec->geometry();
  auto recorder = MakeKvMomentsRecorder(g, &moments);
  if (recorder == nullptr) return absl::InternalError("moments recorder");
  const int32_t nblocks = (n_ctx + g.block_size - 1) / g.block_size;
  const size_t block_bytes = recorder->LayerBlockBytes() * g.n_layers;
  ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache,
                   KvCache::Create(std::move(recorder), (nblocks + 1) * block_bytes));
  std::vector<int32_t> blocks;
  for (int32_t i = 0; i < nblocks; ++i) blocks.push_back(cache->pool().Allocate());
  ModelRunner runner(model, cache.get(), pool, n_ctx);
  const int32_t bos = model->tokenizer->bos_id();
  std::vector<int32_t> chunk(n_ctx);
  for (size_t c = 0; c + n_ctx <= ids.size(); c += n_ctx) {
    std::copy(ids.begin() + c, ids.begin() + c + n_ctx, chunk.begin());
    if (bos >= 0) chunk[0] = bos;
    BatchEntry e;
    e.tokens = chunk.data();
    e.n_tokens = n_ctx;
    e.block_table = blocks.data();
    e.n_blocks = nblocks;
    e.logits = LogitsMode::kNone;
    int64_t rows = 0;
    runner.Forward({e}, &rows);
  }
  return codec->Calibrate(moments);
}

absl::StatusOr<EvalResult> RunEval(const EvalOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.context < 8) return absl::InvalidArgumentError("--context must be at least 8");
  std::ifstream in(o.text_file, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read --text ", o.text_file));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (o.max_bytes > 0 && static_cast<int64_t>(text.size()) > o.max_bytes) {
    text.resize(static_cast<size_t>(o.max_bytes));
  }
  ThreadPool pool(o.threads > 0 ? o.threads
                                : std::max(1, static_cast<int>(std::thread::hardware_concurrency())));
  ASSIGN_OR_RETURN(Side test, MakeSide(o, o.weights, o.kv_cache, &pool, o.weight_memory_budget));
  Side ref;
  if (o.compare) {
    ASSIGN_OR_RETURN(ref, MakeSide(o, o.reference_weights, o.reference_kv_cache, &pool));
  }
  const Tokenizer& tok = *test.model->tokenizer;
  std::vector<int32_t> ids = tok.Encode(text, /*add_special=*/true);
  const int32_t bos = tok.bos_id();
  const int32_t n_ctx = o.context;
  int32_t n_chunks = static_cast<int32_t>(ids.size() / n_ctx);
  if (o.max_chunks > 0) n_chunks = std::min(n_chunks, o.max_chunks);
  if (n_chunks == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the text has %d tokens, fewer than one chunk of %d", ids.size(), n_ctx));
  }
  const int32_t V = test.model->config.vocab_size;
  const int32_t first = n_ctx / 2;
  int32_t test_step = o.prefill_step > 0 ? o.prefill_step : n_ctx;
  if (o.prefill_step == 0 && test.cache->codec().SealAfterAttend()) {
    test_step = test.cache->block_size();
  }
  double nll = 0, nll2 = 0, ref_nll = 0, kl = 0;
  int64_t agree = 0, count = 0;
  std::vector<double> kls;
  std::vector<double> lp_test, lp_ref;
  std::vector<int32_t> chunk(n_ctx);
  for (int32_t c = 0; c < n_chunks; ++c) {
    std::copy(ids.begin() + static_cast<int64_t>(c) * n_ctx,
              ids.begin() + static_cast<int64_t>(c + 1) * n_ctx, chunk.begin());
    if (bos >= 0) chunk[0] = bos;
    // Runs the chunk in steps of `step` tokens and returns the logits of positions [from, n_ctx).
    std::vector<float> step_logits;
    auto run = [&](Side& s, int32_t step, int32_t from) -> const float* {
      step_logits.clear();
      for (int32_t p0 = 0; p0 < n_ctx; p0 += step) {
        BatchEntry e;
        e.tokens = chunk.data() + p0;
        e.n_tokens = std::min(step, n_ctx - p0);
        e.start_pos = p0;
        e.block_table = s.blocks.data();
        e.n_blocks = static_cast<int32_t>((p0 + e.n_tokens + s.cache->block_size() - 1) /
                                          s.cache->block_size());
        e.logits = p0 + e.n_tokens > from ? LogitsMode::kAll : LogitsMode::kNone;
        int64_t rows = 0;
        const float* lg = s.runner->Forward({e}, &rows);
        if (step >= n_ctx) return lg + static_cast<size_t>(from) * V;
        for (int32_t i = std::max(p0, from); i < p0 + e.n_tokens; ++i) {
          step_logits.insert(step_logits.end(), lg + static_cast<size_t>(i - p0) * V,
                             lg + static_cast<size_t>(i - p0 + 1) * V);
        }
      }
      return step_logits.data();
    };
    const float* lt = run(test, test_step, first);
    // Copy: the reference run reuses nothing of the test side, but keep the test logits
    // alive independently of it.
    std::vector<float> test_logits(lt, lt + static_cast<size_t>(n_ctx - first) * V);
    const float* lr = o.compare ? run(ref, n_ctx, 0) : nullptr;
    for (int32_t i = first; i < n_ctx - 1; ++i) {
      const int32_t next = chunk[i + 1];
      LogSoftmax(test_logits.data() + static_cast<size_t>(i - first) * V, V, &lp_test);
      nll -= lp_test[next];
      nll2 += lp_test[next] * lp_test[next];
      ++count;
      if (lr != nullptr) {
        LogSoftmax(lr + static_cast<size_t>(i) * V, V, &lp_ref);
        ref_nll -= lp_ref[next];
        double k = 0;
        int32_t am_t = 0, am_r = 0;
        for (int32_t v = 0; v < V; ++v) {
          k += std::exp(lp_ref[v]) * (lp_ref[v] - lp_test[v]);
          if (lp_test[v] > lp_test[am_t]) am_t = v;
          if (lp_ref[v] > lp_ref[am_r]) am_r = v;
        }
        k = std::max(0.0, k);
        kl += k;
        kls.push_back(k);
        agree += am_t == am_r ? 1 : 0;
      }
    }
    if (o.progress) o.progress(c + 1, n_chunks);
  }
  EvalResult r;
  const double mean = nll / count;
  r.perplexity = std::exp(mean);
  const double var = std::max(0.0, nll2 / count - mean * mean);
  r.perplexity_stderr = r.perplexity * std::sqrt(var / std::max<int64_t>(1, count - 1));
  r.tokens_scored = count;
  r.chunks = n_chunks;
  if (o.compare) {
    r.reference_perplexity = std::exp(ref_nll / count);
    r.kl_divergence = kl / count;
    std::sort(kls.begin(), kls.end());
    r.kl_divergence_p99 = kls[std::min(kls.size() - 1, static_cast<size_t>(kls.size() * 0.99))];
    r.top1_agreement = static_cast<double>(agree) / count;
    r.reference_kv_bytes_per_token = ref.cache->codec().BytesPerToken();
  }
  // Bits per parameter over every weight (embeddings, norms and output included).
  r.weight_bytes = test.model->WeightBytes();
  r.weight_bits_per_param = 8.0 * r.weight_bytes / test.model->Parameters();
  r.kv_bytes_per_token = test.cache->codec().BytesPerToken();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace compressd
