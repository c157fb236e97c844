// OpenGgufModel: a llama-family GGUF (general.architecture llama, mistral or qwen2) as a
// TensorSource under Hugging Face names, plus its ModelConfig read from {arch}.* keys.
//
// Names: token_embd -> model.embed_tokens, blk.N.attn_{q,k,v,output} ->
// model.layers.N.self_attn.{q,k,v,o}_proj, blk.N.ffn_{gate,up,down} -> ...mlp.*_proj,
// attn_norm -> input_layernorm, ffn_norm -> post_attention_layernorm, output_norm ->
// model.norm, output -> lm_head (".weight"/".bias" kept). Tensors with no HF name keep their
// GGUF name (e.g. rope_freqs.weight). Shapes are row-major (GGUF dims reversed).
//
// RoPE layout: llama.cpp's converter reorders the rows of Q and K (weights and biases) of
// llama-arch models so that each head's rotation pairs are adjacent (interleaved). The engine
// uses the HF rotate-half layout, so for architecture llama the source undoes it: with head
// size D and h the head, HF row h*D + s*D/2 + i = GGUF row h*D + 2*i + s (s in {0,1},
// i < D/2), using head_count for Q and head_count_kv for K. Such views own a permuted copy
// (rows of blocks for Q8_0/Q4_0); all others are zero-copy into the mapping. qwen2 GGUFs are
// not permuted by the converter and are returned as stored.
//
// The source keeps `gguf` alive and is immutable: any thread may call it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "engine/model/config.h"
#include "engine/model/gguf.h"
#include "engine/model/tensor_source.h"

namespace compressd {

// INVALID_ARGUMENT naming the key for missing/ill-typed hyper-parameters, UNIMPLEMENTED for
// other architectures or RoPE variants. The config is validated.
absl::StatusOr<std::unique_ptr<TensorSource>> OpenGgufModel(std::shared_ptr<GgufFile> gguf,
                                                            ModelConfig* config_out);

// Maps a GGUF tensor name to its HF name ("" when there is none).
std::string GgufToHfName(const std::string& gguf_name);

// The row permutation above, for tests and writers: GGUF row -> HF row and back, on `rows`
// rows of `row_bytes` bytes split in `n_head` heads. false when rows do not split into heads
// of even size.
bool UnpermuteRopeRows(const uint8_t* gguf_rows, int64_t rows, size_t row_bytes, int64_t n_head,
                       uint8_t* hf_rows);
bool PermuteRopeRows(const uint8_t* hf_rows, int64_t rows, size_t row_bytes, int64_t n_head,
                     uint8_t* gguf_rows);

}  // namespace compressd
