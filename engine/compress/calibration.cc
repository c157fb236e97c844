// CalibrationData::Collect: a plain causal forward of a Llama-family model over independent
// chunks of the calibration text (full attention within a chunk, no KV cache), recording
// the statistics of each linear's input. Runs on the loading thread plus a ThreadPool.
#include "engine/compress/calibration.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/core/thread_pool.h"
#include "engine/model/model.h"
#include "kernels/gemm.h"
#include "kernels/ops.h"

namespace compressd {

void ActivationStats::Accumulate(const float* x, int64_t n, bool full) {
  if (col_sq_sum.empty()) {
    col_sq_sum.assign(static_cast<size_t>(cols), 0.0);
    col_abs_max.assign(static_cast<size_t>(cols), 0.0f);
  }
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * cols;
    for (int64_t c = 0; c < cols; ++c) {
      col_sq_sum[c] += static_cast<double>(xt[c]) * xt[c];
      col_abs_max[c] = std::max(col_abs_max[c], std::fabs(xt[c]));
    }
  }
  if (full) {
    if (xtx.empty()) xtx.assign(static_cast<size_t>(cols * cols), 0.0);
    // X^T X of this block with the dense fp32 GEMM (y = x W^T with W = x = X^T [cols][n]),
    // accumulated into double across blocks.
    std::vector<float> xt(static_cast<size_t>(cols * n)), h(static_cast<size_t>(cols * cols));
    for (int64_t t = 0; t < n; ++t)
      for (int64_t c = 0; c < cols; ++c) xt[c * n + t] = x[t * cols + c];
    kernels::PackedWeight pw;
    pw.format.kind = kernels::WeightKind::kDense;
    pw.format.dtype = DType::kF32;
    pw.rows = cols;
    pw.cols = n;
    pw.data = xt.data();
    pw.data_bytes = xt.size() * 4;
    kernels::Gemm(pw, xt.data(), cols, h.data(), cols, 0, cols);
    for (size_t i = 0; i < h.size(); ++i) xtx[i] += h[i];
  }
  n_samples += n;
}

std::string CalibrationKeyForTensor(const std::string& name) {
  if (name == "lm_head.weight" || name == "model.embed_tokens.weight") return "lm_head_in";
  if (!absl::StartsWith(name, "model.layers.")) return "";
  const std::string rest = name.substr(13);
  const size_t dot = rest.find('.');
  if (dot == std::string::npos) return "";
  const std::string layer = rest.substr(0, dot), tail = rest.substr(dot + 1);
  const std::string p = "layers." + layer + ".";
  if (absl::StartsWith(tail, "self_attn.q_proj") || absl::StartsWith(tail, "self_attn.k_proj") ||
      absl::StartsWith(tail, "self_attn.v_proj")) {
    return p + "attn_in";
  }
  if (absl::StartsWith(tail, "self_attn.o_proj")) return p + "o_in";
  if (absl::StartsWith(tail, "mlp.gate_proj") || absl::StartsWith(tail, "mlp.up_proj")) {
    return p + "mlp_in";
  }
  if (absl::StartsWith(tail, "mlp.down_proj")) return p + "down_in";
  return "";
}

const ActivationStats* CalibrationData::ForLinear(const std::string& tensor_name) const {
  auto it = stats_.find(CalibrationKeyForTensor(tensor_name));
  return it == stats_.end() ? nullptr : &it->second;
}

absl::StatusOr<std::unique_ptr<CalibrationData>> CalibrationData::Collect(
    const Model& m, const CalibrationOptions& opt) {
  std::ifstream in(opt.text_file, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("--calibration-file: cannot read '", opt.text_file, "'"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<int32_t> tokens = m.tokenizer->Encode(ss.str(), false);
  if (static_cast<int64_t>(tokens.size()) > opt.max_tokens) tokens.resize(opt.max_tokens);
  if (tokens.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("--calibration-file '", opt.text_file, "' has fewer than 2 tokens"));
  }
  const ModelConfig& c = m.config;
  const ModelWeights& w = m.weights;
  const int64_t H = c.hidden_size, QD = c.q_dim(), KVD = c.kv_dim(), F = c.intermediate_size;
  const int hd = c.head_dim, half = hd / 2, nh = c.num_attention_heads,
            group = c.num_attention_heads / c.num_key_value_heads;
  auto data = std::make_unique<CalibrationData>();
  auto& st = data->stats_;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = absl::StrCat("layers.", l, ".");
    st[p + "attn_in"].cols = H;
    st[p + "o_in"].cols = QD;
    st[p + "mlp_in"].cols = H;
    st[p + "down_in"].cols = F;
  }
  st["lm_head_in"].cols = H;
  ThreadPool pool(opt.threads > 0 ? opt.threads
                                  : std::max(1, static_cast<int>(std::thread::hardware_concurrency())));
  const int ctx = std::max(2, std::min<int>(opt.context, c.max_position_embeddings > 0 ? c.max_position_embeddings : opt.context));
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) inv_freq[i] = static_cast<float>(1.0 / std::pow(double(c.rope_theta), 2.0 * i / hd));
  std::vector<float> x, xn, q, k, v, att, gate, up, cs(half), sn(half), sc;
  for (size_t start = 0; start < tokens.size(); start += ctx) {
    const int64_t T = std::min<int64_t>(ctx, tokens.size() - start);
    x.assign(T * H, 0);
    xn.resize(T * H);
    q.resize(T * QD);
    k.resize(T * KVD);
    v.resize(T * KVD);
    att.resize(T * QD);
    gate.resize(T * F);
    up.resize(T * F);
    for (int64_t t = 0; t < T; ++t) EmbedToken(w, H, tokens[start + t], x.data() + t * H);
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      const LayerWeights& L = w.layers[l];
      const std::string p = absl::StrCat("layers.", l, ".");
      for (int64_t t = 0; t < T; ++t)
        kernels::RmsNorm(x.data() + t * H, L.attn_norm.data(), H, c.rms_norm_eps, xn.data() + t * H);
      st[p + "attn_in"].Accumulate(xn.data(), T, opt.full_xtx);
      LinearForwardMany({&L.q, &L.k, &L.v}, xn.data(), T, {q.data(), k.data(), v.data()}, pool);
      for (int64_t t = 0; t < T; ++t) {
        for (int i = 0; i < half; ++i) {
          cs[i] = std::cos(t * inv_freq[i]);
          sn[i] = std::sin(t * inv_freq[i]);
        }
        kernels::RopeRotateHalf(q.data() + t * QD, nh, hd, cs.data(), sn.data());
        kernels::RopeRotateHalf(k.data() + t * KVD, c.num_key_value_heads, hd, cs.data(), sn.data());
      }
      pool.ParallelFor(T * nh, 1, [&](int64_t b, int64_t e) {
        std::vector<float> s(static_cast<size_t>(T));
        for (int64_t u = b; u < e; ++u) {
          const int64_t t = u / nh;
          const int h = static_cast<int>(u % nh), kvh = h / group;
          const float* qv = q.data() + t * QD + h * hd;
          for (int64_t j = 0; j <= t; ++j) {
            s[j] = kernels::Dot(qv, k.data() + j * KVD + kvh * hd, hd) / std::sqrt(float(hd));
          }
          kernels::SoftmaxInPlace(s.data(), t + 1);
          float* o = att.data() + t * QD + h * hd;
          std::fill(o, o + hd, 0.0f);
          for (int64_t j = 0; j <= t; ++j) {
            const float* vv = v.data() + j * KVD + kvh * hd;
            for (int d = 0; d < hd; ++d) o[d] += s[j] * vv[d];
          }
        }
      }, 4 * hd * T);
      st[p + "o_in"].Accumulate(att.data(), T, opt.full_xtx);
      LinearForward(L.o, att.data(), T, xn.data(), H, pool, &sc);
      for (int64_t t = 0; t < T; ++t) {
        kernels::AddInPlace(x.data() + t * H, xn.data() + t * H, H);
        kernels::RmsNorm(x.data() + t * H, L.ffn_norm.data(), H, c.rms_norm_eps, xn.data() + t * H);
      }
      st[p + "mlp_in"].Accumulate(xn.data(), T, opt.full_xtx);
      LinearForwardMany({&L.gate, &L.up}, xn.data(), T, {gate.data(), up.data()}, pool);
      kernels::SiluMul(gate.data(), up.data(), gate.data(), T * F);
      st[p + "down_in"].Accumulate(gate.data(), T, opt.full_xtx);
      LinearForward(L.down, gate.data(), T, xn.data(), H, pool, &sc);
      kernels::AddInPlace(x.data(), xn.data(), T * H);
    }
    for (int64_t t = 0; t < T; ++t)
      kernels::RmsNorm(x.data() + t * H, w.final_norm.data(), H, c.rms_norm_eps, xn.data() + t * H);
    st["lm_head_in"].Accumulate(xn.data(), T, opt.full_xtx);
    data->tokens_ += T;
  }
  return data;
}

}  // namespace compressd
