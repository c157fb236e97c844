#include "tests/util/kdocs_gguf.h"

#include <unistd.h>

#include <cstdio>
#include <map>
#include <vector>

#include "engine/model/gguf_source.h"
#include "engine/model/gguf_writer.h"
#include "engine/model/safetensors.h"
#include "engine/model/tokenizer.h"
#include "gtest/gtest.h"

namespace compressd::testing {

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

}  // namespace

std::string WriteKdocsGguf(const std::string& dir, GgmlType type) {
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

}  // namespace compressd::testing
