// Model: config + weights + tokenizer of one loaded decoder-only transformer. Built by
// LoadModel (model_loader.cc) through the architecture registry; immutable afterwards and
// shared read-only by the runner.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/compress/linear.h"
#include "engine/model/config.h"
#include "engine/model/tensor_source.h"
#include "engine/model/tokenizer.h"

namespace compressd {

struct LayerWeights {
  std::vector<float> attn_norm;  // input_layernorm [hidden]
  std::vector<float> ffn_norm;   // post_attention_layernorm [hidden]
  Linear q, k, v, o;             // q/k/v may carry biases (Qwen2)
  Linear gate, up, down;
};

struct ModelWeights {
  TensorView embed;  // [vocab][hidden], any plain dtype or GGUF block type; rows gathered
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;
  Linear lm_head;  // shares embed's bytes when tied and stored as is
  // Tied embeddings whose lm_head was compressed or converted: token rows are read from the
  // lm_head (dequantized per row), so the original table is never touched or counted.
  bool embed_from_lm_head = false;
};

// Copies row `token` of the model's input embedding into out[hidden] as fp32.
void EmbedToken(const ModelWeights& w, int64_t hidden, int32_t token, float* out);

struct Model {
  std::string id;  // path or random:<shape>
  ModelConfig config;
  ModelWeights weights;
  std::shared_ptr<const Tokenizer> tokenizer;
  std::shared_ptr<TensorSource> source;  // keeps mmap'd bytes alive
  std::string weight_recipe = "none";

  // Parameter and byte counts by group: "embeddings", "attention", "mlp", "norms", "lm_head".
  struct Group {
    std::string name;
    std::string format;
    uint64_t params = 0;
    uint64_t bytes = 0;
  };
  std::vector<Group> Groups() const;
  uint64_t Parameters() const;
  uint64_t WeightBytes() const;
};

// Copies row `token` of the embedding table into out[hidden] as fp32.
void EmbeddingRow(const TensorView& embed, int64_t hidden, int32_t token, float* out);

}  // namespace compressd
