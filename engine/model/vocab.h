// VocabData: a tokenizer's vocabulary in plain form, filled either from tokenizer.json or
// from GGUF metadata (tokenizer.ggml.*), and turned into a Tokenizer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace compressd {

enum class VocabType : uint8_t {
  kSpm = 0,        // sentencepiece-style BPE: U+2581 for spaces, byte fallback <0xNN>
  kByteLevel = 1,  // GPT-2 byte-level BPE with a regex pre-tokenizer
};

// GGUF tokenizer.ggml.token_type values.
enum class TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct VocabData {
  VocabType type = VocabType::kSpm;
  std::vector<std::string> tokens;   // id -> piece as stored (U+2581 / byte-level chars)
  std::vector<float> scores;         // spm scores (may be empty)
  std::vector<TokenType> token_types;
  std::vector<std::string> merges;   // "a b" pairs, rank = index (BPE)
  // Pre-tokenizer name for byte-level vocabularies: "gpt2", "llama3" ("llama-bpe"),
  // "qwen2", ... (GGUF tokenizer.ggml.pre).
  std::string pre;
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unk_id = -1;
  int32_t pad_id = -1;
  std::vector<int32_t> eos_ids;  // extra end-of-generation ids (e.g. <|eot_id|>)
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = true;  // spm: prepend U+2581 to the text
  std::string chat_template;
};

}  // namespace compressd
