#include "engine/exec/runner.h"

#include <algorithm>
#include <cmath>

#include "engine/core/logging.h"
#include "kernels/ops.h"

namespace compressd {

ModelRunner::ModelRunner(std::shared_ptr<const Model> model, KvCache* cache, ThreadPool* pool,
                         int32_t max_context)
    : model_(std::move(model)), cache_(cache), pool_(pool), max_context_(max_context) {
  BuildRope();
}

void ModelRunner::BuildRope() {
  const ModelConfig& c = model_->config;
  const int half = c.head_dim / 2;
  std::vector<double> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    inv_freq[i] = 1.0 / std::pow(static_cast<double>(c.rope_theta), 2.0 * i / c.head_dim);
  }
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type == RopeScalingType::kLinear) {
    for (double& f : inv_freq) f /= rs.factor;
  } else if (rs.type == RopeScalingType::kLlama3) {
    const double old_ctx = rs.original_max_position_embeddings;
    const double low_wavelen = old_ctx / rs.low_freq_factor;
    const double high_wavelen = old_ctx / rs.high_freq_factor;
    for (double& f : inv_freq) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f /= rs.factor;
      } else {
        const double smooth = (old_ctx / wavelen - rs.low_freq_factor) /
                              (rs.high_freq_factor - rs.low_freq_factor);
        f = (1.0 - smooth) * f / rs.factor + smooth * f;
      }
    }
  }
  rope_cos_.resize(static_cast<size_t>(max_context_) * half);
  rope_sin_.resize(rope_cos_.size());
  for (int p = 0; p < max_context_; ++p) {
    for (int i = 0; i < half; ++i) {
      const double a = p * inv_freq[i];
      rope_cos_[static_cast<size_t>(p) * half + i] = static_cast<float>(std::cos(a));
      rope_sin_[static_cast<size_t>(p) * half + i] = static_cast<float>(std::sin(a));
    }
  }
}

const float* ModelRunner::Forward(const std::vector<BatchEntry>& batch, int64_t* n_rows) {
  const ModelConfig& c = model_->config;
  const ModelWeights& w = model_->weights;
  const KvCodec& codec = cache_->codec();
  const int bs = cache_->block_size();
  const int64_t H = c.hidden_size, QD = c.q_dim(), KVD = c.kv_dim(), F = c.intermediate_size;
  const int hd = c.head_dim, half = hd / 2;

  int64_t T = 0, rows = 0;
  for (const auto& e : batch) {
    CHECK(e.start_pos + e.n_tokens <= max_context_);
    T += e.n_tokens;
    rows += e.logits == LogitsMode::kAll ? e.n_tokens : (e.logits == LogitsMode::kLast ? 1 : 0);
  }
  *n_rows = rows;
  if (T == 0) return nullptr;
  x_.resize(T * H);
  xn_.resize(T * H);
  q_.resize(T * QD);
  k_.resize(T * KVD);
  v_.resize(T * KVD);
  attn_.resize(T * QD);
  gate_.resize(T * F);
  up_.resize(T * F);
  pos_.resize(T);
  entry_of_.resize(T);

  // Embeddings and per-token bookkeeping.
  {
    int64_t t = 0;
    for (size_t b = 0; b < batch.size(); ++b) {
      const auto& e = batch[b];
      for (int i = 0; i < e.n_tokens; ++i, ++t) {
        EmbedToken(w, H, e.tokens[i], x_.data() + t * H);
        pos_[t] = e.start_pos + i;
        entry_of_[t] = static_cast<int32_t>(b);
      }
    }
  }
  // Block pointers of each entry, per layer, are recomputed per layer below.
  std::vector<int64_t> bp_off(batch.size() + 1, 0);
  for (size_t b = 0; b < batch.size(); ++b) bp_off[b + 1] = bp_off[b] + batch[b].n_blocks;
  block_ptrs_.resize(bp_off.back());
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float eps = c.rms_norm_eps;

  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& L = w.layers[l];
    // The previous layer's residual add (x += its down projection, left in xn_) is fused
    // into this layer's input norm: one dispatch fewer per layer.
    pool_->ParallelFor(T, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        if (l > 0) kernels::AddInPlace(x_.data() + t * H, xn_.data() + t * H, H);
        kernels::RmsNorm(x_.data() + t * H, L.attn_norm.data(), H, eps, xn_.data() + t * H);
      }
    }, 6 * H);
    LinearForwardMany({&L.q, &L.k, &L.v}, xn_.data(), T, {q_.data(), k_.data(), v_.data()},
                      *pool_);
    // RoPE, then append K/V to each sequence's blocks.
    pool_->ParallelFor(T, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const float* cs = rope_cos_.data() + static_cast<size_t>(pos_[t]) * half;
        const float* sn = rope_sin_.data() + static_cast<size_t>(pos_[t]) * half;
        kernels::RopeRotateHalf(q_.data() + t * QD, c.num_attention_heads, hd, cs, sn);
        kernels::RopeRotateHalf(k_.data() + t * KVD, c.num_key_value_heads, hd, cs, sn);
        const BatchEntry& be = batch[entry_of_[t]];
        const int32_t block = be.block_table[pos_[t] / bs - be.n_demoted];
        codec.Store(l, cache_->Block(block, l), pos_[t] % bs, k_.data() + t * KVD,
                    v_.data() + t * KVD);
      }
    }, 4 * (QD + KVD));
    // Codecs that encode a block once it is full (kv_codec.h): after every Store of the step,
    // or, for SealAfterAttend codecs, after the step's attention instead.
    auto seal_full_blocks = [&] {
      pool_->ParallelFor(T, 1, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
          if (pos_[t] % bs != bs - 1) continue;
          const BatchEntry& be = batch[entry_of_[t]];
          codec.Seal(l, cache_->Block(be.block_table[pos_[t] / bs - be.n_demoted], l));
        }
      }, 16 * KVD * bs);
    };
    if (codec.NeedsSeal() && !codec.SealAfterAttend()) seal_full_blocks();
    for (size_t b = 0; b < batch.size(); ++b) {
      for (int i = 0; i < batch[b].n_blocks; ++i) {
        block_ptrs_[bp_off[b] + i] = cache_->Block(batch[b].block_table[i], l);
      }
    }
    // Attention: one unit per (token, head).
    const int nh = c.num_attention_heads;
    pool_->ParallelFor(T * nh, 1, [&](int64_t b, int64_t e) {
      thread_local std::vector<float> scratch;
      for (int64_t u = b; u < e;) {
        const int64_t t = u / nh;
        const int h0 = static_cast<int>(u % nh);
        const int h1 = static_cast<int>(std::min<int64_t>(nh, h0 + (e - u)));
        const int n_ctx = pos_[t] + 1;
        scratch.resize(codec.ScratchFloats(n_ctx));
        codec.Attend(l, q_.data() + t * QD, block_ptrs_.data() + bp_off[entry_of_[t]], n_ctx,
                     scale, attn_.data() + t * QD, scratch.data(), h0, h1);
        u += h1 - h0;
      }
    }, 4 * hd * (T > 0 ? pos_[T - 1] + 1 : 1));
    if (codec.NeedsSeal() && codec.SealAfterAttend()) seal_full_blocks();
    LinearForward(L.o, attn_.data(), T, xn_.data(), H, *pool_, &scratch_);
    pool_->ParallelFor(T, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        kernels::AddInPlace(x_.data() + t * H, xn_.data() + t * H, H);
        kernels::RmsNorm(x_.data() + t * H, L.ffn_norm.data(), H, eps, xn_.data() + t * H);
      }
    }, 6 * H);
    LinearForwardMany({&L.gate, &L.up}, xn_.data(), T, {gate_.data(), up_.data()}, *pool_);
    pool_->ParallelFor(T * F, 4096, [&](int64_t b, int64_t e) {
      kernels::SiluMul(gate_.data() + b, up_.data() + b, gate_.data() + b, e - b);
    }, 8);
    LinearForward(L.down, gate_.data(), T, xn_.data(), H, *pool_, &scratch_);
    if (l + 1 == c.num_hidden_layers) {  // otherwise the next layer's norm adds it
      pool_->ParallelFor(T * H, 4096, [&](int64_t b, int64_t e) {
        kernels::AddInPlace(x_.data() + b, xn_.data() + b, e - b);
      }, 1);
    }
  }

  // Final norm for the rows that need logits, then the output projection.
  if (rows == 0) return nullptr;
  std::vector<int64_t> src_rows;
  src_rows.reserve(rows);
  {
    int64_t t = 0;
    for (const auto& e : batch) {
      if (e.logits == LogitsMode::kAll) {
        for (int i = 0; i < e.n_tokens; ++i) src_rows.push_back(t + i);
      } else if (e.logits == LogitsMode::kLast) {
        src_rows.push_back(t + e.n_tokens - 1);
      }
      t += e.n_tokens;
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    kernels::RmsNorm(x_.data() + src_rows[r] * H, w.final_norm.data(), H, eps,
                     xn_.data() + r * H);
  }
  const int64_t V = c.vocab_size;
  logits_.resize(rows * V);
  LinearForward(w.lm_head, xn_.data(), rows, logits_.data(), V, *pool_, &scratch_);
  return logits_.data();
}

}  // namespace compressd
