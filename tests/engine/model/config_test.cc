#include "engine/model/config.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "engine/model/gguf_source.h"
#include "engine/model/gguf_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

json Base() {
  return json{{"architectures", {"LlamaForCausalLM"}},
              {"model_type", "llama"},
              {"hidden_size", 64},
              {"intermediate_size", 172},
              {"num_hidden_layers", 5},
              {"num_attention_heads", 8},
              {"num_key_value_heads", 4},
              {"vocab_size", 512},
              {"max_position_embeddings", 512},
              {"rms_norm_eps", 1e-5},
              {"rope_theta", 10000.0},
              {"tie_word_embeddings", true},
              {"bos_token_id", 1},
              {"eos_token_id", 2}};
}

void ExpectInvalid(const json& j, const std::string& field) {
  auto c = ParseHfConfig(j.dump());
  absl::Status st = c.ok() ? c->Validate() : c.status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << j.dump();
  EXPECT_THAT(std::string(st.message()), HasSubstr(field)) << j.dump();
}

TEST(ConfigTest, Stories260K) {
  REQUIRE_SHARED(path, "models/stories260K/config.json");
  auto c = ParseHfConfig(testing::ReadFileOrDie(path));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->Validate().ok());
  EXPECT_EQ(c->architecture, "LlamaForCausalLM");
  EXPECT_EQ(c->model_type, "llama");
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->intermediate_size, 172);
  EXPECT_EQ(c->num_hidden_layers, 5);
  EXPECT_EQ(c->num_attention_heads, 8);
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_EQ(c->q_dim(), 64);
  EXPECT_EQ(c->kv_dim(), 32);
  EXPECT_EQ(c->vocab_size, 512);
  EXPECT_EQ(c->max_position_embeddings, 512);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c->rope_theta, 10000.0f);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_EQ(c->eos_token_id, 2);
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kNone);
}

TEST(ConfigTest, Kdocs7m) {
  REQUIRE_SHARED(path, "models/kdocs-7m/config.json");
  auto c = ParseHfConfig(testing::ReadFileOrDie(path));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->Validate().ok());
  EXPECT_EQ(c->hidden_size, 256);
  EXPECT_EQ(c->vocab_size, 4096);
}

TEST(ConfigTest, Qwen2ImpliesBiasAndEosList) {
  json j = Base();
  j["model_type"] = "qwen2";
  j["architectures"] = {"Qwen2ForCausalLM"};
  j["eos_token_id"] = {2, 7, 9};
  j["sliding_window"] = 4096;
  j["use_sliding_window"] = false;
  auto c = ParseHfConfig(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->Validate().ok());
  EXPECT_TRUE(c->attention_bias);
  EXPECT_EQ(c->eos_token_id, 2);
  EXPECT_THAT(c->extra_eos_token_ids, ::testing::ElementsAre(7, 9));
  EXPECT_EQ(c->sliding_window, 0);
  EXPECT_EQ(c->architecture, "Qwen2ForCausalLM");
}

TEST(ConfigTest, MistralAndExplicitHeadDim) {
  json j = Base();
  j["model_type"] = "mistral";
  j.erase("architectures");
  j["head_dim"] = 16;
  j["sliding_window"] = 4096;
  auto c = ParseHfConfig(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->Validate().ok());
  EXPECT_EQ(c->architecture, "MistralForCausalLM");
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->q_dim(), 128);
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_FALSE(c->attention_bias);
}

TEST(ConfigTest, RopeScaling) {
  json j = Base();
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  auto c = ParseHfConfig(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->Validate().ok());
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_FLOAT_EQ(c->rope_scaling.factor, 8.0f);
  EXPECT_FLOAT_EQ(c->rope_scaling.high_freq_factor, 4.0f);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);

  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  c = ParseHfConfig(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kLinear);
  EXPECT_FLOAT_EQ(c->rope_scaling.factor, 2.0f);

  j["rope_scaling"] = nullptr;
  c = ParseHfConfig(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kNone);

  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
  ExpectInvalid(j, "rope_scaling.type");
  j["rope_scaling"] = {{"type", "linear"}};
  ExpectInvalid(j, "rope_scaling.factor");
  j["rope_scaling"] = {{"type", "linear"}, {"factor", "2"}};
  ExpectInvalid(j, "rope_scaling.factor");
  j["rope_scaling"] = {{"factor", 2.0}};
  ExpectInvalid(j, "rope_scaling.type");
  j["rope_scaling"] = 3;
  ExpectInvalid(j, "rope_scaling");
}

TEST(ConfigTest, MissingIllTypedAndOutOfRangeFields) {
  for (const char* field : {"hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "vocab_size", "model_type"}) {
    json j = Base();
    j.erase(field);
    ExpectInvalid(j, field);
    j = Base();
    j[field] = "many";
    ExpectInvalid(j, field);
  }
  for (const char* field : {"hidden_size", "num_key_value_heads", "vocab_size", "head_dim",
                            "max_position_embeddings", "bos_token_id"}) {
    json j = Base();
    j[field] = -3;
    ExpectInvalid(j, field);
    j[field] = 1e30;
    ExpectInvalid(j, field);
  }
  for (const char* field : {"rms_norm_eps", "rope_theta"}) {
    json j = Base();
    j[field] = "x";
    ExpectInvalid(j, field);
    j[field] = -1.0;
    ExpectInvalid(j, field);
  }
  json j = Base();
  j["tie_word_embeddings"] = "yes";
  ExpectInvalid(j, "tie_word_embeddings");
  j = Base();
  j["eos_token_id"] = {2, "x"};
  ExpectInvalid(j, "eos_token_id[1]");
  j = Base();
  j["eos_token_id"] = "two";
  ExpectInvalid(j, "eos_token_id");
  j = Base();
  j["model_type"] = "gpt_neox";
  ExpectInvalid(j, "model_type");
  j = Base();
  j["architectures"] = "LlamaForCausalLM";
  ExpectInvalid(j, "architectures");
  j = Base();
  j["hidden_act"] = "gelu";
  ExpectInvalid(j, "hidden_act");
}

TEST(ConfigTest, ValidateConsistency) {
  json j = Base();
  j["num_key_value_heads"] = 3;
  ExpectInvalid(j, "num_key_value_heads");
  j = Base();
  j["head_dim"] = 7;
  ExpectInvalid(j, "head_dim");
  j = Base();
  j["eos_token_id"] = 512;
  ExpectInvalid(j, "eos_token_id");
  j = Base();
  j["hidden_size"] = 4;  // head_dim 4/8 = 0
  ExpectInvalid(j, "head_dim");
  ModelConfig c;
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ConfigTest, NotJsonNeverThrows) {
  for (const char* text : {"", "{", "[1,2]", "null", "{\"model_type\": }", "\xff\xfe",
                           "{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}) {
    auto c = ParseHfConfig(text);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
  // Deep nesting: nlohmann's parser is iterative, so this must not overflow the stack.
  std::string deep = "{\"model_type\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  EXPECT_EQ(ParseHfConfig(deep).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- ModelConfig from GGUF metadata (OpenGgufModel) ----------------------------------

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// The required llama hyper-parameters with `hidden` width and 4 heads.
void LlamaKeys(GgufWriter& w, uint32_t hidden) {
  w.AddString("general.architecture", "llama");
  w.AddUint32("llama.embedding_length", hidden);
  w.AddUint32("llama.feed_forward_length", 64);
  w.AddUint32("llama.block_count", 1);
  w.AddUint32("llama.attention.head_count", 4);
}

TEST(GgufModelTest, ConfigErrors) {
  auto open = [](GgufWriter& w) {
    auto g = GgufFile::OpenFromBytes(w.Serialize(), "m.gguf");
    ModelConfig c;
    return OpenGgufModel(*g, &c).status();
  };
  GgufWriter w0;
  EXPECT_THAT(Msg(open(w0)), HasSubstr("general.architecture"));
  GgufWriter w1;
  w1.AddString("general.architecture", "llama");
  EXPECT_THAT(Msg(open(w1)), HasSubstr("llama.embedding_length"));
  GgufWriter w2;
  w2.AddString("general.architecture", "llama");
  w2.AddUint32("llama.embedding_length", 64);
  w2.AddUint32("llama.feed_forward_length", 64);
  w2.AddUint32("llama.block_count", 1);
  w2.AddString("llama.attention.head_count", "four");
  EXPECT_THAT(Msg(open(w2)), HasSubstr("llama.attention.head_count"));
  GgufWriter w3;
  LlamaKeys(w3, 64);
  w3.AddUint32("llama.attention.head_count_kv", 3);
  w3.AddStringArray("tokenizer.ggml.tokens", {"a"});
  EXPECT_THAT(Msg(open(w3)), HasSubstr("num_key_value_heads"));
  GgufWriter w4;
  LlamaKeys(w4, 64);
  w4.AddStringArray("tokenizer.ggml.tokens", {"a"});
  w4.AddString("llama.rope.scaling.type", "yarn");
  EXPECT_EQ(open(w4).code(), absl::StatusCode::kUnimplemented);
  GgufWriter w5;  // Q rows that are not heads x head_dim
  LlamaKeys(w5, 64);
  const std::vector<float> e = Random(64 * 64, 1);
  ASSERT_TRUE(w5.AddTensor("token_embd.weight", GgmlType::kF32, {2, 64}, e.data()).ok());
  ASSERT_TRUE(w5.AddTensor("blk.0.attn_q.weight", GgmlType::kF32, {32, 64}, e.data()).ok());
  EXPECT_THAT(Msg(open(w5)), HasSubstr("blk.0.attn_q.weight"));
  GgufWriter w6;  // no embeddings
  LlamaKeys(w6, 64);
  w6.AddStringArray("tokenizer.ggml.tokens", {"a"});
  EXPECT_THAT(Msg(open(w6)), HasSubstr("token_embd.weight"));
}

TEST(GgufModelTest, Llama3RopeFreqsAndLinearScaling) {
  GgufWriter w;
  LlamaKeys(w, 512);  // head_dim 128
  w.AddFloat32("llama.rope.freq_base", 500000.0f);
  w.AddStringArray("tokenizer.ggml.tokens", {"a", "b"});
  std::vector<float> f(64);
  for (int i = 0; i < 64; ++i) {  // Llama 3.1: factor 8, low 1, high 4, original 8192
    const double freq = std::pow(500000.0, -2.0 * i / 128);
    const double wl = 2 * M_PI / freq;
    if (wl < 8192 / 4.0) {
      f[i] = 1;
    } else if (wl > 8192 / 1.0) {
      f[i] = 8;
    } else {
      const double s = (8192 / wl - 1) / 3;
      f[i] = static_cast<float>(1 / ((1 - s) / 8 + s));
    }
  }
  ASSERT_TRUE(w.AddTensor("rope_freqs.weight", GgmlType::kF32, {64}, f.data()).ok());
  const std::vector<float> e = Random(2 * 512, 1);
  ASSERT_TRUE(w.AddTensor("token_embd.weight", GgmlType::kF32, {2, 512}, e.data()).ok());
  auto g = GgufFile::OpenFromBytes(w.Serialize());
  ASSERT_TRUE(g.ok()) << g.status();
  ModelConfig c;
  auto src = OpenGgufModel(*g, &c);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 8.0f);
  EXPECT_TRUE((*src)->Has("rope_freqs.weight"));
  EXPECT_EQ(c.vocab_size, 2);

  GgufWriter l;
  LlamaKeys(l, 64);
  l.AddString("llama.rope.scaling.type", "linear");
  l.AddFloat32("llama.rope.scaling.factor", 4.0f);
  ASSERT_TRUE(l.AddTensor("token_embd.weight", GgmlType::kF32, {2, 64}, e.data()).ok());
  auto g2 = GgufFile::OpenFromBytes(l.Serialize());
  ASSERT_TRUE(OpenGgufModel(*g2, &c).ok());
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::kLinear);
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 4.0f);
  EXPECT_EQ(c.vocab_size, 2);  // from token_embd when there is no token list
}

}  // namespace
}  // namespace compressd
