#include "engine/model/random_model.h"

#include <cstdlib>
#include <cmath>
#include <mutex>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_join.h"
#include "kernels/types.h"

namespace compressd {
namespace {

struct Shape {
  const char* name;
  const char* model_type;
  int hidden, inter, layers, heads, kv_heads, vocab, ctx;
  float rope_theta;
  bool tied;
  bool bias;
  bool llama3_rope;
};

constexpr Shape kShapes[] = {
    {"tiny", "llama", 64, 172, 2, 4, 2, 512, 256, 10000.f, true, false, false},
    // tiny with an 8k context: long-prompt tests (4k-token prompts) in milliseconds.
    {"tiny-8k", "llama", 64, 172, 2, 4, 2, 512, 8192, 10000.f, true, false, false},
    {"smollm2-135m", "llama", 576, 1536, 30, 9, 3, 49152, 8192, 100000.f, true, false, false},
    {"llama-3.2-1b", "llama", 2048, 8192, 16, 32, 8, 128256, 131072, 500000.f, true, false, true},
    {"llama-3.1-8b", "llama", 4096, 14336, 32, 32, 8, 128256, 131072, 500000.f, false, false,
     true},
    {"qwen2-0.5b", "qwen2", 896, 4864, 24, 14, 2, 151936, 32768, 1000000.f, true, true, false},
};

uint64_t SplitMix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

class RandomSource : public TensorSource {
 public:
  RandomSource(const ModelConfig& c, DType dtype, uint64_t seed)
      : config_(c), dtype_(dtype), seed_(seed) {
    auto add = [&](const std::string& n, std::vector<int64_t> shape) { shapes_[n] = shape; };
    const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), f = c.intermediate_size;
    add("model.embed_tokens.weight", {c.vocab_size, h});
    add("model.norm.weight", {h});
    if (!c.tie_word_embeddings) add("lm_head.weight", {c.vocab_size, h});
    for (int i = 0; i < c.num_hidden_layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      add(p + "input_layernorm.weight", {h});
      add(p + "post_attention_layernorm.weight", {h});
      add(p + "self_attn.q_proj.weight", {q, h});
      add(p + "self_attn.k_proj.weight", {kv, h});
      add(p + "self_attn.v_proj.weight", {kv, h});
      add(p + "self_attn.o_proj.weight", {h, q});
      if (c.attention_bias) {
        add(p + "self_attn.q_proj.bias", {q});
        add(p + "self_attn.k_proj.bias", {kv});
        add(p + "self_attn.v_proj.bias", {kv});
      }
      add(p + "mlp.gate_proj.weight", {f, h});
      add(p + "mlp.up_proj.weight", {f, h});
      add(p + "mlp.down_proj.weight", {h, f});
    }
  }

  std::vector<std::string> Names() const override {
    std::vector<std::string> n;
    for (const auto& [k, v] : shapes_) n.push_back(k);
    return n;
  }
  bool Has(const std::string& name) const override { return shapes_.contains(name); }
  std::string Describe() const override { return "random:" + config_.model_type; }

  absl::StatusOr<TensorView> Get(const std::string& name) const override {
    auto it = shapes_.find(name);
    if (it == shapes_.end()) return absl::NotFoundError("random model has no tensor " + name);
    TensorView t;
    t.name = name;
    t.shape = it->second;
    const bool is_norm = name.find("norm") != std::string::npos;
    const bool is_bias = name.find(".bias") != std::string::npos;
    // Norm weights are ones, everything else uniform with variance 1/fan_in so that
    // activations keep their scale through the layers.
    const int64_t n = t.numel();
    const int64_t fan_in = t.shape.back();
    const float a = is_bias ? 0.02f : std::sqrt(3.0f / static_cast<float>(fan_in));
    uint64_t s = seed_ ^ std::hash<std::string>{}(name);
    t.dtype = is_norm || is_bias ? DType::kF32 : dtype_;
    const size_t es = kernels::DTypeSize(t.dtype);
    // 64-byte aligned, like every weight buffer after loading (OwnMappedBuffers,
    // AlignBuffers): the kernels' 64-byte loads never straddle two cache lines.
    // (new[] gave 16-byte alignment: random:llama-3.2-1b bf16 decode 18.9-19.6 vs 23.6-25.8.)
    const size_t alloc = (static_cast<size_t>(n) * es + 63) / 64 * 64;
    auto buf = std::shared_ptr<uint8_t[]>(static_cast<uint8_t*>(std::aligned_alloc(64, alloc)),
                                          [](uint8_t* q) { std::free(q); });
    if (buf == nullptr) return absl::ResourceExhaustedError("random model: out of memory for " + name);
    for (int64_t i = 0; i < n; ++i) {
      float v = 1.0f;
      if (!is_norm) {
        const uint64_t r = SplitMix(s);
        v = (static_cast<float>(r >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * a;
      }
      switch (t.dtype) {
        case DType::kF32: reinterpret_cast<float*>(buf.get())[i] = v; break;
        case DType::kF16: reinterpret_cast<uint16_t*>(buf.get())[i] = kernels::F32ToF16(v); break;
        default: reinterpret_cast<uint16_t*>(buf.get())[i] = kernels::F32ToBF16(v); break;
      }
    }
    t.data = buf.get();
    t.bytes = n * es;
    t.owner = std::shared_ptr<const void>(buf, buf.get());
    return t;
  }

 private:
  ModelConfig config_;
  DType dtype_;
  uint64_t seed_;
  absl::flat_hash_map<std::string, std::vector<int64_t>> shapes_;
};

}  // namespace

std::vector<std::string> RandomShapeNames() {
  std::vector<std::string> n;
  for (const auto& s : kShapes) n.push_back(s.name);
  return n;
}

absl::StatusOr<ModelConfig> RandomShapeConfig(const std::string& shape) {
  for (const auto& s : kShapes) {
    if (shape != s.name) continue;
    ModelConfig c;
    c.architecture = std::string(s.model_type) == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
    c.model_type = s.model_type;
    c.hidden_size = s.hidden;
    c.intermediate_size = s.inter;
    c.num_hidden_layers = s.layers;
    c.num_attention_heads = s.heads;
    c.num_key_value_heads = s.kv_heads;
    c.head_dim = s.hidden / s.heads;
    c.vocab_size = s.vocab;
    c.max_position_embeddings = s.ctx;
    c.rope_theta = s.rope_theta;
    c.tie_word_embeddings = s.tied;
    c.attention_bias = s.bias;
    c.bos_token_id = 1;
    c.eos_token_id = 2;
    if (s.llama3_rope) {
      c.rope_scaling.type = RopeScalingType::kLlama3;
      c.rope_scaling.factor = 32.0f;
      c.rope_scaling.low_freq_factor = 1.0f;
      c.rope_scaling.high_freq_factor = 4.0f;
      c.rope_scaling.original_max_position_embeddings = 8192;
    }
    return c;
  }
  return absl::NotFoundError(absl::StrCat("unknown random shape '", shape,
                                          "'; known: ", absl::StrJoin(RandomShapeNames(), ", ")));
}

std::unique_ptr<TensorSource> MakeRandomSource(const ModelConfig& config, DType dtype,
                                               uint64_t seed) {
  return std::make_unique<RandomSource>(config, dtype, seed);
}

VocabData RandomVocab(int32_t vocab_size) {
  VocabData v;
  v.type = VocabType::kSpm;
  v.tokens = {"<unk>", "<s>", "</s>"};
  v.token_types = {TokenType::kUnknown, TokenType::kControl, TokenType::kControl};
  static const char* kHex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    v.tokens.push_back(std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">");
    v.token_types.push_back(TokenType::kByte);
  }
  for (int32_t i = static_cast<int32_t>(v.tokens.size()); i < vocab_size; ++i) {
    v.tokens.push_back("\xe2\x96\x81w" + std::to_string(i));
    v.token_types.push_back(TokenType::kNormal);
  }
  v.tokens.resize(vocab_size);
  v.token_types.resize(vocab_size);
  v.scores.assign(vocab_size, 0.0f);
  v.unk_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  v.add_bos = true;
  return v;
}

}  // namespace compressd
