// Llama family builder (Llama 2/3, SmolLM, TinyLlama, stories/kdocs): RMSNorm, rotate-half
// RoPE, grouped-query attention, SwiGLU MLP, tied or untied embeddings.
#include "absl/strings/str_format.h"
#include "engine/model/architecture.h"
#include "kernels/gemm.h"

namespace compressd {
namespace {

absl::StatusOr<std::vector<float>> LoadVector(const TensorSource& src, const std::string& name,
                                              int64_t expect) {
  ASSIGN_OR_RETURN(TensorView t, src.Get(name));
  if (t.numel() != expect) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: tensor %s has %d elements, expected %d", src.Describe(), name, t.numel(), expect));
  }
  return TensorToF32(t);
}

absl::StatusOr<Linear> LoadLinear(const TensorSource& src, const LinearFactory& make,
                                  const std::string& name, int64_t rows, int64_t cols) {
  ASSIGN_OR_RETURN(TensorView t, src.Get(name));
  if (t.shape.size() != 2 || t.shape[0] != rows || t.shape[1] != cols) {
    std::string got;
    for (size_t i = 0; i < t.shape.size(); ++i) absl::StrAppend(&got, i ? "x" : "", t.shape[i]);
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: tensor %s has shape [%s], expected [%dx%d]", src.Describe(), name, got, rows, cols));
  }
  return make(name, t);
}

}  // namespace

absl::Status BuildLlamaFamily(const TensorSource& src, const LinearFactory& make, bool qkv_bias,
                              Model* model) {
  const ModelConfig& c = model->config;
  ModelWeights& w = model->weights;
  ASSIGN_OR_RETURN(w.embed, src.Get("model.embed_tokens.weight"));
  if (w.embed.shape.size() != 2 || w.embed.shape[0] != c.vocab_size ||
      w.embed.shape[1] != c.hidden_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: model.embed_tokens.weight must be [%d x %d] (vocab_size x hidden_size)",
        src.Describe(), c.vocab_size, c.hidden_size));
  }
  if (w.embed.storage != StorageType::kPlain && c.hidden_size % 32 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: block-quantized embeddings need hidden_size %% 32 == 0", src.Describe()));
  }
  w.layers.resize(c.num_hidden_layers);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    LayerWeights& L = w.layers[i];
    ASSIGN_OR_RETURN(L.attn_norm, LoadVector(src, p + "input_layernorm.weight", c.hidden_size));
    ASSIGN_OR_RETURN(L.ffn_norm,
                     LoadVector(src, p + "post_attention_layernorm.weight", c.hidden_size));
    ASSIGN_OR_RETURN(L.q, LoadLinear(src, make, p + "self_attn.q_proj.weight", c.q_dim(),
                                     c.hidden_size));
    ASSIGN_OR_RETURN(L.k, LoadLinear(src, make, p + "self_attn.k_proj.weight", c.kv_dim(),
                                     c.hidden_size));
    ASSIGN_OR_RETURN(L.v, LoadLinear(src, make, p + "self_attn.v_proj.weight", c.kv_dim(),
                                     c.hidden_size));
    ASSIGN_OR_RETURN(L.o, LoadLinear(src, make, p + "self_attn.o_proj.weight", c.hidden_size,
                                     c.q_dim()));
    if (qkv_bias) {
      ASSIGN_OR_RETURN(L.q.bias, LoadVector(src, p + "self_attn.q_proj.bias", c.q_dim()));
      ASSIGN_OR_RETURN(L.k.bias, LoadVector(src, p + "self_attn.k_proj.bias", c.kv_dim()));
      ASSIGN_OR_RETURN(L.v.bias, LoadVector(src, p + "self_attn.v_proj.bias", c.kv_dim()));
    }
    ASSIGN_OR_RETURN(L.gate, LoadLinear(src, make, p + "mlp.gate_proj.weight",
                                        c.intermediate_size, c.hidden_size));
    ASSIGN_OR_RETURN(L.up, LoadLinear(src, make, p + "mlp.up_proj.weight", c.intermediate_size,
                                      c.hidden_size));
    ASSIGN_OR_RETURN(L.down, LoadLinear(src, make, p + "mlp.down_proj.weight", c.hidden_size,
                                        c.intermediate_size));
  }
  ASSIGN_OR_RETURN(w.final_norm, LoadVector(src, "model.norm.weight", c.hidden_size));
  if (!c.tie_word_embeddings && src.Has("lm_head.weight")) {
    ASSIGN_OR_RETURN(w.lm_head,
                     LoadLinear(src, make, "lm_head.weight", c.vocab_size, c.hidden_size));
  } else {
    // Tied: the output projection reads the embedding table (compressed like any linear),
    // which the embeddings keep reading unless they switch to its copy below.
    TensorView table = w.embed;
    table.shared = true;
    ASSIGN_OR_RETURN(w.lm_head, make("lm_head.weight", table));
    // When that made a new copy (compressed or converted), embeddings read it too, so the
    // model holds one table. Two-GEMM formats have no per-row dequantization.
    w.embed_from_lm_head = w.lm_head.w.data != w.embed.data && !w.lm_head.first &&
                           kernels::GemmSupports(w.lm_head.w.format);
  }
  return absl::OkStatus();
}

ArchitectureSpec LlamaArchitecture() {
  return {"LlamaForCausalLM",
          {"llama"},
          [](const TensorSource& s, const LinearFactory& f, Model* m) {
            return BuildLlamaFamily(s, f, m->config.attention_bias, m);
          }};
}

}  // namespace compressd
