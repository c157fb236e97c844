// ReadGgufVocab: tokenizer.ggml.* metadata -> VocabData (declared in gguf.h).
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/gguf.h"

namespace compressd {
namespace {

// Token id key: absent -> -1; present -> must index the vocabulary.
absl::Status ReadTokenId(const GgufFile& g, const std::string& key, size_t n_tokens, int32_t* out) {
  if (!g.Has(key)) return absl::OkStatus();
  ASSIGN_OR_RETURN(int64_t id, g.GetInt(key));
  if (id < 0 || static_cast<uint64_t>(id) >= n_tokens) {
    // llama.cpp writes -1 / out-of-range ids for "none" in some converters; a negative id
    // means absent, a too-large one is an error.
    if (id < 0) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("GGUF ", g.path(), ": ", key, " = ", id,
                                                   " is outside the vocabulary of ", n_tokens));
  }
  *out = static_cast<int32_t>(id);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<VocabData> ReadGgufVocab(const GgufFile& g) {
  VocabData v;
  auto err = [&](const std::string& key, absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF ", g.path(), ": ", key, " ", what));
  };
  if (!g.Has("tokenizer.ggml.model")) return err("tokenizer.ggml.model", "is absent");
  ASSIGN_OR_RETURN(std::string model, g.GetString("tokenizer.ggml.model"));
  if (model == "llama") {
    v.type = VocabType::kSpm;
  } else if (model == "gpt2") {
    v.type = VocabType::kByteLevel;
  } else {
    return absl::UnimplementedError(absl::StrCat("GGUF ", g.path(), ": tokenizer.ggml.model '",
                                                 model, "' is not supported (llama, gpt2)"));
  }

  if (!g.Has("tokenizer.ggml.tokens")) return err("tokenizer.ggml.tokens", "is absent");
  ASSIGN_OR_RETURN(v.tokens, g.GetStringArray("tokenizer.ggml.tokens"));
  const size_t n = v.tokens.size();
  if (n == 0) return err("tokenizer.ggml.tokens", "is empty");
  if (n > static_cast<size_t>(INT32_MAX)) return err("tokenizer.ggml.tokens", "is too long");

  if (g.Has("tokenizer.ggml.scores")) {
    ASSIGN_OR_RETURN(v.scores, g.GetFloatArray("tokenizer.ggml.scores"));
    if (v.scores.size() != n) {
      return err("tokenizer.ggml.scores",
                 absl::StrCat("has ", v.scores.size(), " entries for ", n, " tokens"));
    }
  }
  if (g.Has("tokenizer.ggml.token_type")) {
    ASSIGN_OR_RETURN(std::vector<int64_t> types, g.GetIntArray("tokenizer.ggml.token_type"));
    if (types.size() != n) {
      return err("tokenizer.ggml.token_type",
                 absl::StrCat("has ", types.size(), " entries for ", n, " tokens"));
    }
    v.token_types.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      if (types[i] < 1 || types[i] > 6) {
        return err("tokenizer.ggml.token_type",
                   absl::StrCat("[", i, "] = ", types[i], " is not a token type (1..6)"));
      }
      v.token_types.push_back(static_cast<TokenType>(types[i]));
    }
  } else {
    v.token_types.assign(n, TokenType::kNormal);
  }
  if (g.Has("tokenizer.ggml.merges")) {
    ASSIGN_OR_RETURN(v.merges, g.GetStringArray("tokenizer.ggml.merges"));
  }
  if (v.type == VocabType::kByteLevel && v.merges.empty()) {
    return err("tokenizer.ggml.merges", "is required for a gpt2 tokenizer");
  }
  ASSIGN_OR_RETURN(v.pre, g.GetStringOr("tokenizer.ggml.pre", ""));

  RETURN_IF_ERROR(ReadTokenId(g, "tokenizer.ggml.bos_token_id", n, &v.bos_id));
  RETURN_IF_ERROR(ReadTokenId(g, "tokenizer.ggml.eos_token_id", n, &v.eos_id));
  RETURN_IF_ERROR(ReadTokenId(g, "tokenizer.ggml.unknown_token_id", n, &v.unk_id));
  RETURN_IF_ERROR(ReadTokenId(g, "tokenizer.ggml.padding_token_id", n, &v.pad_id));
  int32_t eot = -1;
  RETURN_IF_ERROR(ReadTokenId(g, "tokenizer.ggml.eot_token_id", n, &eot));
  if (eot >= 0 && eot != v.eos_id) v.eos_ids.push_back(eot);
  int32_t eom = -1;
  RETURN_IF_ERROR(ReadTokenId(g, "tokenizer.ggml.eom_token_id", n, &eom));
  if (eom >= 0 && eom != v.eos_id && eom != eot) v.eos_ids.push_back(eom);

  // llama.cpp defaults: spm adds BOS and a space prefix; byte-level adds neither.
  const bool spm = v.type == VocabType::kSpm;
  ASSIGN_OR_RETURN(v.add_bos, g.GetBoolOr("tokenizer.ggml.add_bos_token", spm));
  ASSIGN_OR_RETURN(v.add_eos, g.GetBoolOr("tokenizer.ggml.add_eos_token", false));
  ASSIGN_OR_RETURN(v.add_space_prefix, g.GetBoolOr("tokenizer.ggml.add_space_prefix", spm));
  ASSIGN_OR_RETURN(v.chat_template, g.GetStringOr("tokenizer.chat_template", ""));
  return v;
}

}  // namespace compressd
