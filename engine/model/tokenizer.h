// Tokenizer: text <-> token ids for sentencepiece-style BPE (Llama 2, stories260K,
// kdocs-7m, Mistral) and byte-level BPE with regex pre-tokenizers (GPT-2, Llama 3,
// Qwen2, SmolLM). Immutable after construction; every method is thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/core/status.h"
#include "engine/model/vocab.h"

namespace compressd {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // tokenizer.json text; tokenizer_config_json (may be empty) supplies add_bos_token,
  // add_eos_token, bos/eos token strings and chat_template.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view tokenizer_json,
                                                             std::string_view tokenizer_config_json);
  // Reads dir/tokenizer.json and, when present, dir/tokenizer_config.json.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromDirectory(const std::string& dir);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromVocab(VocabData vocab);

  // Encodes text. Special/added tokens written literally in the text (e.g. "<|im_start|>")
  // are matched when parse_special is true. add_special adds BOS/EOS as the vocabulary's
  // add_bos/add_eos say.
  virtual std::vector<int32_t> Encode(std::string_view text, bool add_special,
                                      bool parse_special = true) const = 0;

  // Concatenated bytes of the tokens (may end in a partial UTF-8 sequence). For spm
  // vocabularies with add_space_prefix, one leading space of the result is dropped (what
  // the encoder prepended), as Hugging Face's decoder does, so Decode(Encode(t)) == t.
  virtual std::string Decode(const std::vector<int32_t>& ids, bool skip_special = true) const = 0;

  // Bytes one token contributes to decoded text. For spm the leading-space rule of the
  // first token is not applied here; see StreamDecoder.
  virtual std::string TokenBytes(int32_t id) const = 0;

  // The stored piece (e.g. "▁the", "Ġthe", "<0x0A>").
  virtual const std::string& Piece(int32_t id) const = 0;
  virtual int32_t PieceToId(std::string_view piece) const = 0;  // -1 when absent

  virtual int32_t vocab_size() const = 0;
  virtual bool IsSpecial(int32_t id) const = 0;
  virtual const VocabData& vocab() const = 0;

  int32_t bos_id() const { return vocab().bos_id; }
  int32_t eos_id() const { return vocab().eos_id; }
  // EOS and every extra end-of-generation id.
  bool IsEndOfGeneration(int32_t id) const;
  const std::string& chat_template() const { return vocab().chat_template; }
};

// Incremental decoder for streaming: Append returns the text that became complete
// (whole UTF-8 characters), holding back a partial character until its last byte
// arrives. Handles spm's leading-space removal on the first token.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = true);
  std::string Append(int32_t id);
  // Whatever is held back (invalid/partial bytes rendered as U+FFFD).
  std::string Flush();

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  bool first_ = true;
  std::string pending_;
};

}  // namespace compressd
