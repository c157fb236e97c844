// Internal to the tokenizer (engine/model/tokenizer*.cc): the one concrete Tokenizer,
// BpeTokenizer, that serves both vocabulary types, and the pieces it is built from:
// pre-tokenizers (hand-written versions of the GPT-2 / Llama 3 / Qwen2 split regexes) and
// the BPE merge loop. Not for use outside engine/model/tokenizer*.cc and their tests.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/model/tokenizer.h"

namespace compressd::tokenizer_internal {

// Debian's Abseil is built with its own string_view type; lookups and StrCat go through this.
inline absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

enum class PreTokenizerKind : uint8_t {
  kNone = 0,  // spm: the whole (normalized) text is one word
  kGpt2,      // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kLlama3,    // (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|...
  kQwen2,     // as kLlama3 with \p{N} (one digit per word)
  kSmolLm,    // Digits(individual) then the GPT-2 regex (SmolLM / SmolLM2)
};

// Maps a GGUF tokenizer.ggml.pre name ("gpt2", "llama-bpe", "qwen2", ...) to a kind.
absl::StatusOr<PreTokenizerKind> PreTokenizerFromName(std::string_view name);

// Splits text into words (views into text). Every byte of text is in exactly one word.
void PreTokenize(PreTokenizerKind kind, std::string_view text, std::vector<std::string_view>* out);

// Options that tokenizer.json can state and GGUF metadata implies.
struct BpeOptions {
  PreTokenizerKind pre = PreTokenizerKind::kNone;
  bool byte_fallback = false;   // spm: unknown characters become <0xNN> tokens
  bool ignore_merges = false;   // byte-level: a word that is a whole token is emitted as is
  bool fuse_unk = true;         // consecutive unknown characters become one <unk>
  bool add_prefix_space = false;  // byte-level: prepend " " to the text (GPT-2 option)
};

// BPE over either merges (rank of a pair of token ids) or, for GGUF spm vocabularies that
// carry no merges, sentencepiece scores (highest-scoring concatenation first).
class BpeTokenizer final : public Tokenizer {
 public:
  // Validates the vocabulary (sizes, ids in range, merges resolvable).
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> Create(VocabData vocab, BpeOptions opts);

  std::vector<int32_t> Encode(std::string_view text, bool add_special,
                              bool parse_special = true) const override;
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special = true) const override;
  std::string TokenBytes(int32_t id) const override;
  const std::string& Piece(int32_t id) const override;
  int32_t PieceToId(std::string_view piece) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(vocab_.tokens.size()); }
  bool IsSpecial(int32_t id) const override;
  const VocabData& vocab() const override { return vocab_; }

  // Whether decoding drops one leading space (spm with add_space_prefix).
  bool strips_leading_space() const {
    return vocab_.type == VocabType::kSpm && vocab_.add_space_prefix;
  }

 private:
  struct MergeInfo {
    int32_t rank;
    int32_t merged_id;
  };
  struct AddedToken {
    std::string text;
    int32_t id;
    bool special;  // matched only when parse_special
  };

  BpeTokenizer(VocabData vocab, BpeOptions opts) : vocab_(std::move(vocab)), opts_(opts) {}
  absl::Status Init();

  // Encodes one run of ordinary text (no added tokens inside), appending ids.
  void EncodeText(std::string_view text, std::vector<int32_t>* out) const;
  // BPE-merges one word (already byte-level mapped / spm-normalized), appending ids.
  void EncodeWord(std::string_view word, std::vector<int32_t>* out) const;
  // Ids for a symbol that is not in the vocabulary: byte fallback, <unk>, or nothing.
  void EmitUnknown(std::string_view bytes, bool* last_was_unk, std::vector<int32_t>* out) const;

  VocabData vocab_;
  BpeOptions opts_;
  absl::flat_hash_map<std::string, int32_t> piece_to_id_;
  absl::flat_hash_map<uint64_t, MergeInfo> merges_;  // (left id << 32 | right id) -> merge
  std::vector<AddedToken> added_;  // longest first
  std::vector<uint32_t> added_by_first_byte_[256];  // indexes into added_, longest first
  int32_t byte_ids_[256];          // spm <0xNN> ids, -1 when absent
  // spm: ASCII characters that are tokens and occur inside no other mergeable token, so
  // no merge can cross them; the text is split there (equal result, far shorter words).
  bool isolated_[128] = {};
  std::string byte_to_char_[256];  // byte-level: byte -> UTF-8 of its stand-in character
  absl::flat_hash_map<uint32_t, uint8_t> char_to_byte_;
  std::vector<std::string> decoded_;  // id -> bytes it decodes to
};

}  // namespace compressd::tokenizer_internal
