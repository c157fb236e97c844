#include "engine/model/gguf_source.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace compressd {
namespace {

constexpr std::pair<const char*, const char*> kBlockNames[] = {
    {"attn_q", "self_attn.q_proj"},
    {"attn_k", "self_attn.k_proj"},
    {"attn_v", "self_attn.v_proj"},
    {"attn_output", "self_attn.o_proj"},
    {"ffn_gate", "mlp.gate_proj"},
    {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},
    {"attn_norm", "input_layernorm"},
    {"ffn_norm", "post_attention_layernorm"},
};

// Rows src -> dst where dst row h*D + s*D/2 + i comes from src row h*D + 2i + s when
// `to_hf`, and the inverse otherwise.
bool MoveRows(const uint8_t* src, int64_t rows, size_t row_bytes, int64_t n_head, bool to_hf,
              uint8_t* dst) {
  if (n_head <= 0 || rows % n_head != 0) return false;
  const int64_t d = rows / n_head;
  if (d % 2 != 0) return false;
  for (int64_t h = 0; h < n_head; ++h) {
    for (int64_t s = 0; s < 2; ++s) {
      for (int64_t i = 0; i < d / 2; ++i) {
        const int64_t hf = h * d + s * (d / 2) + i;
        const int64_t gg = h * d + 2 * i + s;
        const int64_t from = to_hf ? gg : hf;
        const int64_t to = to_hf ? hf : gg;
        std::memcpy(dst + to * row_bytes, src + from * row_bytes, row_bytes);
      }
    }
  }
  return true;
}

struct Entry {
  const GgufTensorInfo* info;
  int64_t permute_heads;  // 0: as stored
};

class GgufTensorSource : public TensorSource {
 public:
  GgufTensorSource(std::shared_ptr<GgufFile> gguf, absl::flat_hash_map<std::string, Entry> entries)
      : gguf_(std::move(gguf)), entries_(std::move(entries)) {}

  std::vector<std::string> Names() const override {
    std::vector<std::string> names;
    names.reserve(entries_.size());
    for (const auto& [name, e] : entries_) names.push_back(name);
    std::sort(names.begin(), names.end());
    return names;
  }
  bool Has(const std::string& name) const override { return entries_.contains(name); }
  std::string Describe() const override { return gguf_->path(); }

  absl::StatusOr<TensorView> Get(const std::string& name) const override {
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      return absl::NotFoundError(absl::StrCat(gguf_->path(), ": no tensor named ", name));
    }
    ASSIGN_OR_RETURN(TensorView v, gguf_->View(*it->second.info));
    v.name = name;
    if (it->second.permute_heads == 0 || v.bytes == 0) return v;
    const int64_t rows = v.shape.empty() ? 1 : v.shape[0];
    const size_t row_bytes = v.bytes / static_cast<size_t>(rows);
    auto buf = std::make_shared<std::vector<uint8_t>>(v.bytes);
    if (!MoveRows(static_cast<const uint8_t*>(v.data), rows, row_bytes, it->second.permute_heads,
                  /*to_hf=*/true, buf->data())) {
      return absl::InvalidArgumentError(absl::StrCat(gguf_->path(), ": tensor ", name, " has ",
                                                     rows, " rows, not ", it->second.permute_heads,
                                                     " heads of even size"));
    }
    v.data = buf->data();
    v.owner = std::move(buf);
    return v;
  }

 private:
  std::shared_ptr<GgufFile> gguf_;
  absl::flat_hash_map<std::string, Entry> entries_;
};

absl::Status KeyError(const GgufFile& g, const std::string& key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("GGUF ", g.path(), ": ", key, " ", what));
}

// Required positive int32 key.
absl::Status ReadDim(const GgufFile& g, const std::string& key, int32_t* out) {
  if (!g.Has(key)) return KeyError(g, key, "is missing");
  ASSIGN_OR_RETURN(int64_t v, g.GetInt(key));
  if (v <= 0 || v > (1 << 24)) return KeyError(g, key, absl::StrCat("= ", v, " is out of range"));
  *out = static_cast<int32_t>(v);
  return absl::OkStatus();
}

// Llama 3.x stores its RoPE scaling only as per-frequency divisors (rope_freqs.weight).
// Recognise the published parameters (low 1, high 4, original context 8192) by recomputing
// the divisors; anything else is UNIMPLEMENTED rather than silently wrong.
absl::Status ReadRopeFreqs(const GgufFile& g, const ModelConfig& c, RopeScaling* out) {
  const GgufTensorInfo* info = g.FindTensor("rope_freqs.weight");
  if (!info) return absl::OkStatus();
  auto unsupported = [&](absl::string_view why) {
    return absl::UnimplementedError(
        absl::StrCat("GGUF ", g.path(), ": rope_freqs.weight ", why,
                     " (only Llama 3 scaling with low 1, high 4, original context 8192)"));
  };
  if (info->type != GgmlType::kF32 || info->bytes != static_cast<uint64_t>(c.head_dim / 2) * 4) {
    return unsupported("is not F32 [head_dim / 2]");
  }
  ASSIGN_OR_RETURN(TensorView v, g.View(*info));
  std::vector<float> f(c.head_dim / 2);
  std::memcpy(f.data(), v.data, v.bytes);
  RopeScaling rs;
  rs.type = RopeScalingType::kLlama3;
  rs.factor = *std::max_element(f.begin(), f.end());
  if (!(rs.factor >= 1.0f)) return unsupported("has factors below 1");
  if (rs.factor == 1.0f) return absl::OkStatus();
  const double orig = rs.original_max_position_embeddings;
  for (size_t i = 0; i < f.size(); ++i) {
    const double freq = std::pow(static_cast<double>(c.rope_theta), -2.0 * i / c.head_dim);
    const double wavelen = 2 * M_PI / freq;
    double want;
    if (wavelen < orig / rs.high_freq_factor) {
      want = 1.0;
    } else if (wavelen > orig / rs.low_freq_factor) {
      want = rs.factor;
    } else {
      const double smooth =
          (orig / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
      want = 1.0 / ((1 - smooth) / rs.factor + smooth);
    }
    if (std::fabs(want - f[i]) > 1e-3 * want) return unsupported("does not match");
  }
  *out = rs;
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ReadConfig(const GgufFile& g, const std::string& arch) {
  ModelConfig c;
  c.model_type = arch;
  c.architecture = arch == "qwen2"     ? "Qwen2ForCausalLM"
                   : arch == "mistral" ? "MistralForCausalLM"
                                       : "LlamaForCausalLM";
  const std::string p = arch + ".";
  RETURN_IF_ERROR(ReadDim(g, p + "embedding_length", &c.hidden_size));
  RETURN_IF_ERROR(ReadDim(g, p + "feed_forward_length", &c.intermediate_size));
  RETURN_IF_ERROR(ReadDim(g, p + "block_count", &c.num_hidden_layers));
  RETURN_IF_ERROR(ReadDim(g, p + "attention.head_count", &c.num_attention_heads));
  c.num_key_value_heads = c.num_attention_heads;
  if (g.Has(p + "attention.head_count_kv")) {
    RETURN_IF_ERROR(ReadDim(g, p + "attention.head_count_kv", &c.num_key_value_heads));
  }
  c.head_dim = c.hidden_size / c.num_attention_heads;
  if (g.Has(p + "attention.key_length")) {
    RETURN_IF_ERROR(ReadDim(g, p + "attention.key_length", &c.head_dim));
  }
  if (g.Has(p + "rope.dimension_count")) {
    int32_t rot = 0;
    RETURN_IF_ERROR(ReadDim(g, p + "rope.dimension_count", &rot));
    if (rot != c.head_dim) {
      return absl::UnimplementedError(absl::StrCat("GGUF ", g.path(), ": partial RoPE (", p,
                                                   "rope.dimension_count = ", rot,
                                                   ", head_dim = ", c.head_dim, ")"));
    }
  }
  c.max_position_embeddings = 2048;
  if (g.Has(p + "context_length")) {
    RETURN_IF_ERROR(ReadDim(g, p + "context_length", &c.max_position_embeddings));
  }
  ASSIGN_OR_RETURN(double eps, g.GetFloatOr(p + "attention.layer_norm_rms_epsilon", 1e-5));
  c.rms_norm_eps = static_cast<float>(eps);
  ASSIGN_OR_RETURN(double theta, g.GetFloatOr(p + "rope.freq_base", 10000.0));
  c.rope_theta = static_cast<float>(theta);

  ASSIGN_OR_RETURN(std::string scaling, g.GetStringOr(p + "rope.scaling.type", "none"));
  ASSIGN_OR_RETURN(double factor, g.GetFloatOr(p + "rope.scaling.factor", 0.0));
  if (factor == 0.0) {
    ASSIGN_OR_RETURN(factor, g.GetFloatOr(p + "rope.scale_linear", 0.0));
  }
  if (scaling == "linear" ||
      (scaling == "none" && factor > 0.0 && factor != 1.0 && !g.Has(p + "rope.scaling.type"))) {
    c.rope_scaling.type = RopeScalingType::kLinear;
    c.rope_scaling.factor = static_cast<float>(factor);
    if (!(factor > 0.0)) return KeyError(g, p + "rope.scaling.factor", "must be positive");
  } else if (scaling != "none") {
    return absl::UnimplementedError(absl::StrCat("GGUF ", g.path(), ": ", p, "rope.scaling.type '",
                                                 scaling, "' is not supported (none, linear)"));
  }
  if (c.head_dim > 0 && c.head_dim % 2 == 0 && c.rope_scaling.type == RopeScalingType::kNone) {
    RETURN_IF_ERROR(ReadRopeFreqs(g, c, &c.rope_scaling));
  }

  if (const GgufValue* tokens = g.Find("tokenizer.ggml.tokens")) {
    if (tokens->type != GgufType::kArray || tokens->count == 0 || tokens->count > INT32_MAX) {
      return KeyError(g, "tokenizer.ggml.tokens", "must be a non-empty array");
    }
    c.vocab_size = static_cast<int32_t>(tokens->count);
  } else if (const GgufTensorInfo* emb = g.FindTensor("token_embd.weight");
             emb && emb->dims.size() == 2 && emb->dims[1] > 0 && emb->dims[1] <= INT32_MAX) {
    c.vocab_size = static_cast<int32_t>(emb->dims[1]);
  } else {
    return KeyError(g, "tokenizer.ggml.tokens", "is missing (and no token_embd.weight)");
  }
  for (auto [key, out] :
       {std::pair<const char*, int32_t*>{"tokenizer.ggml.bos_token_id", &c.bos_token_id},
        {"tokenizer.ggml.eos_token_id", &c.eos_token_id}}) {
    ASSIGN_OR_RETURN(int64_t id, g.GetIntOr(key, -1));
    if (id >= 0 && id < c.vocab_size) *out = static_cast<int32_t>(id);
  }
  ASSIGN_OR_RETURN(int64_t eot, g.GetIntOr("tokenizer.ggml.eot_token_id", -1));
  if (eot >= 0 && eot < c.vocab_size && eot != c.eos_token_id) {
    c.extra_eos_token_ids.push_back(static_cast<int32_t>(eot));
  }
  c.tie_word_embeddings = g.FindTensor("output.weight") == nullptr;
  c.attention_bias = g.FindTensor("blk.0.attn_q.bias") != nullptr;
  return c;
}

}  // namespace

std::string GgufToHfName(const std::string& name) {
  if (name == "token_embd.weight") return "model.embed_tokens.weight";
  if (name == "output_norm.weight") return "model.norm.weight";
  if (name == "output.weight") return "lm_head.weight";
  if (!absl::StartsWith(name, "blk.")) return "";
  const size_t dot = name.find('.', 4);
  if (dot == std::string::npos) return "";
  int layer = 0;
  if (!absl::SimpleAtoi(name.substr(4, dot - 4), &layer) || layer < 0) return "";
  const std::string rest = name.substr(dot + 1);
  for (const auto& [gg, hf] : kBlockNames) {
    for (const char* kind : {".weight", ".bias"}) {
      if (rest == absl::StrCat(gg, kind)) {
        return absl::StrCat("model.layers.", layer, ".", hf, kind);
      }
    }
  }
  return "";
}

bool UnpermuteRopeRows(const uint8_t* gguf_rows, int64_t rows, size_t row_bytes, int64_t n_head,
                       uint8_t* hf_rows) {
  return MoveRows(gguf_rows, rows, row_bytes, n_head, /*to_hf=*/true, hf_rows);
}

bool PermuteRopeRows(const uint8_t* hf_rows, int64_t rows, size_t row_bytes, int64_t n_head,
                     uint8_t* gguf_rows) {
  return MoveRows(hf_rows, rows, row_bytes, n_head, /*to_hf=*/false, gguf_rows);
}

absl::StatusOr<std::unique_ptr<TensorSource>> OpenGgufModel(std::shared_ptr<GgufFile> gguf,
                                                            ModelConfig* config_out) {
  if (!gguf) return absl::InvalidArgumentError("OpenGgufModel: null GgufFile");
  const GgufFile& g = *gguf;
  if (!g.Has("general.architecture")) {
    return KeyError(g, "general.architecture", "is missing");
  }
  ASSIGN_OR_RETURN(std::string arch, g.GetString("general.architecture"));
  if (arch != "llama" && arch != "mistral" && arch != "qwen2") {
    return absl::UnimplementedError(absl::StrCat("GGUF ", g.path(), ": architecture '", arch,
                                                 "' is not supported (llama, mistral, qwen2)"));
  }
  ASSIGN_OR_RETURN(ModelConfig config, ReadConfig(g, arch));
  RETURN_IF_ERROR(config.Validate());

  // The converter permutes Q/K for the llama architecture (Mistral converts as llama).
  const bool permuted = arch != "qwen2";
  absl::flat_hash_map<std::string, Entry> entries;
  for (const GgufTensorInfo& info : g.tensors()) {
    std::string hf = GgufToHfName(info.name);
    if (hf.empty()) hf = info.name;
    int64_t heads = 0;
    if (permuted && absl::StartsWith(info.name, "blk.")) {
      if (absl::StrContains(info.name, ".attn_q.")) heads = config.num_attention_heads;
      if (absl::StrContains(info.name, ".attn_k.")) heads = config.num_key_value_heads;
    }
    if (heads > 0) {
      const int64_t rows = info.dims.empty() ? 1 : info.dims.back();
      if (rows != static_cast<int64_t>(heads) * config.head_dim) {
        return absl::InvalidArgumentError(absl::StrCat("GGUF ", g.path(), ": tensor ", info.name,
                                                       " has ", rows, " rows, expected ", heads,
                                                       " heads x head_dim ", config.head_dim));
      }
    }
    if (!entries.emplace(hf, Entry{&info, heads}).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF ", g.path(), ": two tensors map to ", hf));
    }
  }
  if (!entries.contains("model.embed_tokens.weight")) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF ", g.path(), ": tensor token_embd.weight is missing"));
  }
  if (config_out) *config_out = config;
  return std::unique_ptr<TensorSource>(new GgufTensorSource(std::move(gguf), std::move(entries)));
}

}  // namespace compressd
