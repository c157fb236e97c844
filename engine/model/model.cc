#include "engine/model/model.h"

#include <cstring>

#include "engine/core/logging.h"
#include "engine/model/ggml_blocks.h"
#include "kernels/gemm.h"

namespace compressd {

void EmbeddingRow(const TensorView& embed, int64_t hidden, int32_t token, float* out) {
  const size_t off = static_cast<size_t>(token) * hidden;
  if (embed.storage == StorageType::kQ8_0) {  // GGUF blocks of 32 (hidden % 32 checked at load)
    DequantizeRowQ8_0(static_cast<const BlockQ8_0*>(embed.data) + off / 32, hidden, out);
    return;
  }
  if (embed.storage == StorageType::kQ4_0) {
    DequantizeRowQ4_0(static_cast<const BlockQ4_0*>(embed.data) + off / 32, hidden, out);
    return;
  }
  switch (embed.dtype) {
    case DType::kF32:
      std::memcpy(out, static_cast<const float*>(embed.data) + off, hidden * sizeof(float));
      return;
    case DType::kF16: {
      const auto* p = static_cast<const uint16_t*>(embed.data) + off;
      for (int64_t i = 0; i < hidden; ++i) out[i] = kernels::F16ToF32(p[i]);
      return;
    }
    case DType::kBF16: {
      const auto* p = static_cast<const uint16_t*>(embed.data) + off;
      for (int64_t i = 0; i < hidden; ++i) out[i] = kernels::BF16ToF32(p[i]);
      return;
    }
    default:
      CHECK_MSG(false, "unsupported embedding dtype");
  }
}

void EmbedToken(const ModelWeights& w, int64_t hidden, int32_t token, float* out) {
  if (w.embed_from_lm_head) {
    kernels::DequantizeRows(w.lm_head.w, token, token + 1, out);
    return;
  }
  EmbeddingRow(w.embed, hidden, token, out);
}

std::vector<Model::Group> Model::Groups() const {
  std::vector<Group> g(5);
  g[0].name = "embeddings";
  g[1].name = "attention";
  g[2].name = "mlp";
  g[3].name = "norms";
  g[4].name = "lm_head";
  const ModelWeights& w = weights;
  g[0].params = static_cast<uint64_t>(w.embed.numel());
  g[0].bytes = w.embed_from_lm_head ? 0 : w.embed.bytes;
  // GGUF block-quantized tables keep dtype's default (F32): the storage names the format.
  g[0].format = w.embed_from_lm_head                         ? "tied:lm_head"
                : w.embed.storage == StorageType::kQ8_0 ? "gguf-q8_0"
                : w.embed.storage == StorageType::kQ4_0 ? "gguf-q4_0"
                                                        : kernels::DTypeName(w.embed.dtype);
  for (const auto& L : w.layers) {
    for (const Linear* l : {&L.q, &L.k, &L.v, &L.o}) {
      g[1].params += l->params() + l->bias.size();
      g[1].bytes += l->bytes() + l->bias.size() * 4;
      g[1].format = l->format_name;
    }
    for (const Linear* l : {&L.gate, &L.up, &L.down}) {
      g[2].params += l->params();
      g[2].bytes += l->bytes();
      g[2].format = l->format_name;
    }
    g[3].params += L.attn_norm.size() + L.ffn_norm.size();
  }
  g[3].params += w.final_norm.size();
  g[3].bytes = g[3].params * 4;
  g[3].format = "f32";
  if (!config.tie_word_embeddings || w.lm_head.w.data != w.embed.data) {
    // Tied and read through the lm_head: its parameters are the embedding's, counted once.
    g[4].params = w.embed_from_lm_head ? 0 : w.lm_head.params();
    g[4].bytes = w.lm_head.bytes();
  }
  g[4].format = config.tie_word_embeddings ? "tied:" + w.lm_head.format_name : w.lm_head.format_name;
  return g;
}

uint64_t Model::Parameters() const {
  uint64_t n = 0;
  for (const auto& g : Groups()) n += g.params;
  return n;
}

uint64_t Model::WeightBytes() const {
  uint64_t n = 0;
  for (const auto& g : Groups()) n += g.bytes;
  return n;
}

}  // namespace compressd
