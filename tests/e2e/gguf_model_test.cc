// A real model (kdocs-7m) converted to GGUF here — F32 and Q8_0/Q4_0 tensors, vocabulary
// in metadata, Q/K rows permuted as llama.cpp's converter does — loads and generates:
// the F32 GGUF gives exactly the safetensors model's greedy tokens.
#include <cstdio>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/model/gguf_source.h"
#include "engine/model/gguf_writer.h"
#include "engine/model/safetensors.h"
#include "engine/model/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

std::string GgufName(const std::string& hf) {
  static const std::map<std::string, std::string> kMap = {
      {"self_attn.q_proj.weight", "attn_q.weight"},   {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},   {"self_attn.o_proj.weight", "attn_output.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},    {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},    {"input_layernorm.weight", "attn_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"}};
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  const std::string p = "model.layers.";
  const size_t dot = hf.find('.', p.size());
  const std::string layer = hf.substr(p.size(), dot - p.size());
  return "blk." + layer + "." + kMap.at(hf.substr(dot + 1));
}

// Writes kdocs-7m as GGUF with matrices in `type` (norms stay F32).
std::string WriteGguf(const std::string& dir, GgmlType type) {
  auto src = SafetensorsSource::Open(dir);
  EXPECT_TRUE(src.ok()) << src.status();
  auto tok = Tokenizer::FromDirectory(dir);
  EXPECT_TRUE(tok.ok()) << tok.status();
  const VocabData& v = (*tok)->vocab();
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  w.AddUint32("llama.embedding_length", 256);
  w.AddUint32("llama.feed_forward_length", 704);
  w.AddUint32("llama.block_count", 8);
  w.AddUint32("llama.attention.head_count", 8);
  w.AddUint32("llama.attention.head_count_kv", 4);
  w.AddUint32("llama.context_length", 256);
  w.AddFloat32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.AddFloat32("llama.rope.freq_base", 10000.0f);
  w.AddString("tokenizer.ggml.model", "llama");
  w.AddStringArray("tokenizer.ggml.tokens", v.tokens);
  // spm vocabularies merge by score: a merged token's score is minus its merge rank, so
  // score order reproduces the BPE merge order (as converters do for BPE models).
  std::vector<float> scores(v.tokens.size(), 0.0f);
  for (size_t r = 0; r < v.merges.size(); ++r) {
    const std::string& m = v.merges[r];
    const size_t sp = m.find(' ');
    const int32_t id = (*tok)->PieceToId(m.substr(0, sp) + m.substr(sp + 1));
    if (id >= 0 && scores[id] == 0.0f) scores[id] = -1.0f - static_cast<float>(r);
  }
  w.AddFloat32Array("tokenizer.ggml.scores", scores);
  std::vector<int32_t> types;
  for (auto t : v.token_types) types.push_back(static_cast<int32_t>(t));
  types.resize(v.tokens.size(), 1);
  w.AddInt32Array("tokenizer.ggml.token_type", types);
  w.AddUint32("tokenizer.ggml.bos_token_id", v.bos_id);
  w.AddUint32("tokenizer.ggml.eos_token_id", v.eos_id);
  w.AddUint32("tokenizer.ggml.unknown_token_id", v.unk_id >= 0 ? v.unk_id : 0);
  w.AddBool("tokenizer.ggml.add_bos_token", true);
  for (const std::string& name : (*src)->Names()) {
    auto t = (*src)->Get(name);
    EXPECT_TRUE(t.ok());
    const float* f = static_cast<const float*>(t->data);
    std::vector<float> vals(f, f + t->numel());
    if (name.find("q_proj") != std::string::npos || name.find("k_proj") != std::string::npos) {
      const int64_t heads = name.find("q_proj") != std::string::npos ? 8 : 4;
      std::vector<float> perm(vals.size());
      EXPECT_TRUE(PermuteRopeRows(reinterpret_cast<const uint8_t*>(vals.data()), t->shape[0],
                                  t->shape[1] * 4, heads, reinterpret_cast<uint8_t*>(perm.data())));
      vals = perm;
    }
    const GgmlType tt = t->shape.size() == 2 ? type : GgmlType::kF32;
    EXPECT_TRUE(w.AddTensor(GgufName(name), tt, t->shape, vals.data()).ok()) << name;
  }
  char tmpl[] = "/tmp/compressd_gguf_XXXXXX";
  const int fd = mkstemp(tmpl);
  close(fd);
  const std::string path = std::string(tmpl) + ".gguf";
  std::rename(tmpl, path.c_str());
  EXPECT_TRUE(w.WriteFile(path).ok());
  return path;
}

std::vector<int32_t> Greedy(const std::string& model, const std::string& prompt, int n,
                            std::vector<int32_t>* prompt_ids = nullptr) {
  EngineOptions o;
  o.model = model;
  o.threads = 2;
  auto e = Engine::Create(o);
  EXPECT_TRUE(e.ok()) << e.status();
  if (!e.ok()) return {};
  GenerationRequest r;
  r.prompt_tokens = (*e)->Tokenize(prompt, true);
  if (prompt_ids != nullptr) *prompt_ids = r.prompt_tokens;
  r.max_tokens = n;
  r.sampling.temperature = 0;
  r.ignore_eos = true;
  std::vector<int32_t> out;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  EXPECT_TRUE((*e)->Submit(r, [&](GenerationEvent&& ev) {
                     std::lock_guard<std::mutex> lock(mu);
                     out.insert(out.end(), ev.token_ids.begin(), ev.token_ids.end());
                     if (ev.finished) {
                       done = true;
                       cv.notify_all();
                     }
                   }).ok());
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  return out;
}

TEST(GgufModel, F32GgufMatchesSafetensorsAndQuantizedGgufGenerates) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  const std::string prompt = "The kernel provides";
  std::vector<int32_t> ref_ids, gguf_ids;
  const std::vector<int32_t> ref = Greedy(dir, prompt, 24, &ref_ids);
  ASSERT_EQ(ref.size(), 24u);
  const std::string f32 = WriteGguf(dir, GgmlType::kF32);
  EXPECT_EQ(Greedy(f32, prompt, 24, &gguf_ids), ref);
  EXPECT_EQ(gguf_ids, ref_ids) << "the GGUF vocabulary tokenizes the prompt differently";
  for (GgmlType q : {GgmlType::kQ8_0, GgmlType::kQ4_0}) {
    const std::string path = WriteGguf(dir, q);
    const std::vector<int32_t> got = Greedy(path, prompt, 24);
    ASSERT_EQ(got.size(), 24u) << GgmlTypeName(q);
    // Quantized weights: the first greedy token of a confident model is unchanged.
    EXPECT_EQ(got[0], ref[0]) << GgmlTypeName(q);
    std::remove(path.c_str());
  }
  std::remove(f32.c_str());
}

}  // namespace
}  // namespace compressd
