// Tokenizer::FromJson: Hugging Face tokenizer.json (+ tokenizer_config.json) -> VocabData
// and BpeOptions. Only the shapes of BPE tokenizers that serve decoder LLMs are accepted;
// anything else is INVALID_ARGUMENT naming the field. nlohmann exceptions stop here.
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/model/tokenizer.h"
#include "engine/model/tokenizer_impl.h"
#include "nlohmann/json.hpp"

namespace compressd {
namespace {

using json = nlohmann::json;
using tokenizer_internal::BpeOptions;
using tokenizer_internal::PreTokenizerKind;

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";

constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

absl::Status Invalid(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", what));
}

std::string TypeOf(const json& j) {
  if (!j.is_object()) return "";
  auto it = j.find("type");
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

// The steps of a component that may be a "Sequence" of steps.
std::vector<json> Steps(const json& j, const char* list_key) {
  if (j.is_null()) return {};
  if (TypeOf(j) == "Sequence" && j.contains(list_key) && j[list_key].is_array()) {
    return j[list_key].get<std::vector<json>>();
  }
  return {j};
}

// A token given as "text" or {"content": "text"}; empty when absent or null.
std::string TokenString(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) {
    return j["content"].get<std::string>();
  }
  return "";
}

absl::Status ReadNormalizer(const json& root, VocabData* v, bool* spm_hint) {
  if (!root.contains("normalizer")) return absl::OkStatus();
  for (const json& step : Steps(root["normalizer"], "normalizers")) {
    const std::string t = TypeOf(step);
    if (t == "Prepend") {
      if (step.value("prepend", "") != kSpmSpace) return Invalid("Prepend normalizer not '▁'");
      v->add_space_prefix = true;
      *spm_hint = true;
    } else if (t == "Replace") {
      const json& pat = step.at("pattern");
      if (!pat.contains("String") || pat["String"] != " " || step.value("content", "") != kSpmSpace) {
        return Invalid("only the Replace(' ' -> '▁') normalizer is supported");
      }
      *spm_hint = true;
    } else if (t == "NFC") {
      // Inputs are taken as already NFC (what clients send); not re-normalized here.
    } else {
      return Invalid(absl::StrCat("normalizer type '", t, "' is not supported"));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadPreTokenizer(const json& root, VocabData* v, BpeOptions* opts, bool* spm_hint,
                              bool* byte_level) {
  if (!root.contains("pre_tokenizer")) return absl::OkStatus();
  const std::vector<json> steps = Steps(root["pre_tokenizer"], "pretokenizers");
  bool digits = false;
  for (const json& step : steps) {
    const std::string t = TypeOf(step);
    if (t == "ByteLevel") {
      *byte_level = true;
      opts->add_prefix_space = step.value("add_prefix_space", false);
      if (step.value("use_regex", true)) {
        opts->pre = digits ? PreTokenizerKind::kSmolLm : PreTokenizerKind::kGpt2;
      }
    } else if (t == "Split") {
      const json& pat = step.at("pattern");
      const std::string re = pat.contains("Regex") ? pat["Regex"].get<std::string>() : "";
      if (re == kGpt2Regex) {
        opts->pre = PreTokenizerKind::kGpt2;
      } else if (re == kLlama3Regex) {
        opts->pre = PreTokenizerKind::kLlama3;
      } else if (re == kQwen2Regex) {
        opts->pre = PreTokenizerKind::kQwen2;
      } else {
        return Invalid(absl::StrCat("Split pre-tokenizer pattern '", re, "' is not supported"));
      }
    } else if (t == "Digits" && step.value("individual_digits", false)) {
      digits = true;
    } else if (t == "Metaspace") {
      *spm_hint = true;
      const std::string scheme = step.value("prepend_scheme", "always");
      v->add_space_prefix = step.value("add_prefix_space", scheme != "never");
    } else {
      return Invalid(absl::StrCat("pre_tokenizer type '", t, "' is not supported"));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadModel(const json& model, VocabData* v, BpeOptions* opts,
                       std::vector<std::pair<std::string, int64_t>>* entries) {
  const std::string type = model.contains("type") ? TypeOf(model) : "BPE";
  if (type != "BPE") return Invalid(absl::StrCat("model type '", type, "' is not supported"));
  if (!model.value("continuing_subword_prefix", json()).is_null() &&
      !model["continuing_subword_prefix"].get<std::string>().empty()) {
    return Invalid("model.continuing_subword_prefix is not supported");
  }
  if (!model.value("end_of_word_suffix", json()).is_null() &&
      !model["end_of_word_suffix"].get<std::string>().empty()) {
    return Invalid("model.end_of_word_suffix is not supported");
  }
  opts->byte_fallback = model.value("byte_fallback", false);
  opts->ignore_merges = model.value("ignore_merges", false);
  opts->fuse_unk = model.value("fuse_unk", false);
  const json& vocab = model.at("vocab");
  if (!vocab.is_object()) return Invalid("model.vocab is not an object");
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) {
      return Invalid(absl::StrCat("model.vocab['", it.key(), "'] is not an integer id"));
    }
    entries->emplace_back(it.key(), it.value().get<int64_t>());
  }
  if (model.contains("merges")) {
    const json& merges = model["merges"];
    if (!merges.is_array()) return Invalid("model.merges is not an array");
    v->merges.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const json& m = merges[i];
      if (m.is_string()) {
        v->merges.push_back(m.get<std::string>());
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        v->merges.push_back(absl::StrCat(m[0].get<std::string>(), " ", m[1].get<std::string>()));
      } else {
        return Invalid(absl::StrCat("model.merges[", i, "] is neither \"a b\" nor [a, b]"));
      }
    }
  }
  return absl::OkStatus();
}

// Resolves a token named in tokenizer_config.json; -1 when unnamed.
absl::StatusOr<int32_t> ConfigTokenId(const json& cfg, const char* key, const VocabData& v,
                                      const std::vector<std::pair<std::string, int64_t>>& all) {
  if (!cfg.contains(key)) return -2;  // not stated
  const std::string s = TokenString(cfg[key]);
  if (s.empty()) return -1;
  for (const auto& [piece, id] : all) {
    if (piece == s) return static_cast<int32_t>(id);
  }
  return absl::InvalidArgumentError(absl::StrCat("tokenizer_config.json: ", key, " '", s,
                                                 "' is not in the vocabulary"));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Build(const json& root, const json& cfg) {
  if (!root.is_object()) return Invalid("top level is not an object");
  VocabData v;
  v.add_space_prefix = false;
  BpeOptions opts;
  bool spm_hint = false;
  bool byte_level = false;
  RETURN_IF_ERROR(ReadNormalizer(root, &v, &spm_hint));
  RETURN_IF_ERROR(ReadPreTokenizer(root, &v, &opts, &spm_hint, &byte_level));
  if (root.contains("decoder")) {
    for (const json& step : Steps(root["decoder"], "decoders")) {
      const std::string t = TypeOf(step);
      if (t == "ByteLevel") byte_level = true;
      if (t == "Metaspace" || t == "ByteFallback") spm_hint = true;
    }
  }
  if (spm_hint == byte_level) {
    return Invalid("cannot tell whether the tokenizer is sentencepiece-style or byte-level");
  }
  v.type = byte_level ? VocabType::kByteLevel : VocabType::kSpm;
  if (byte_level && opts.pre == PreTokenizerKind::kNone) {
    return Invalid("byte-level tokenizer without a supported split pattern");
  }
  if (!root.contains("model")) return Invalid("no model");
  std::vector<std::pair<std::string, int64_t>> entries;
  RETURN_IF_ERROR(ReadModel(root["model"], &v, &opts, &entries));
  const size_t n_model = entries.size();

  struct Added {
    int64_t id;
    std::string content;
    bool special;
  };
  std::vector<Added> added;
  if (root.contains("added_tokens") && root["added_tokens"].is_array()) {
    for (const json& a : root["added_tokens"]) {
      added.push_back({a.at("id").get<int64_t>(), a.at("content").get<std::string>(),
                       a.value("special", false)});
    }
  }
  // Ids must be dense: every id in [0, n) names exactly one piece.
  for (const Added& a : added) entries.emplace_back(a.content, a.id);
  int64_t max_id = -1;
  for (const auto& e : entries) max_id = std::max(max_id, e.second);
  const auto bound = static_cast<int64_t>(entries.size());
  for (const auto& [piece, id] : entries) {
    if (id < 0 || id >= bound) {
      return Invalid(absl::StrCat("token '", piece, "' has id ", id, ", out of range [0, ",
                                  bound, ")"));
    }
  }
  v.tokens.assign(static_cast<size_t>(max_id + 1), std::string());
  std::vector<bool> filled(v.tokens.size(), false);
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& [piece, id] = entries[i];
    if (filled[id]) {
      if (i >= n_model && v.tokens[id] == piece) continue;  // added token also in the vocab
      return Invalid(absl::StrCat("id ", id, " is given to both '", v.tokens[id], "' and '",
                                  piece, "'"));
    }
    v.tokens[id] = piece;
    filled[id] = true;
  }
  v.token_types.assign(v.tokens.size(), TokenType::kNormal);
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    if (!filled[i]) v.token_types[i] = TokenType::kUnused;
  }
  for (const Added& a : added) {
    v.token_types[a.id] = a.special ? TokenType::kControl : TokenType::kUserDefined;
  }

  const json& model = root["model"];
  const std::string unk = model.contains("unk_token") ? TokenString(model["unk_token"]) : "";
  if (!unk.empty()) {
    for (const auto& [piece, id] : entries) {
      if (piece == unk) v.unk_id = static_cast<int32_t>(id);
    }
    if (v.unk_id < 0) return Invalid(absl::StrCat("model.unk_token '", unk, "' is not a token"));
    v.token_types[v.unk_id] = TokenType::kUnknown;
  }

  // BOS from the post-processor template (what Hugging Face adds by default).
  if (root.contains("post_processor") && TypeOf(root["post_processor"]) == "TemplateProcessing") {
    const json& single = root["post_processor"].value("single", json::array());
    if (single.is_array() && !single.empty() && single[0].contains("SpecialToken")) {
      const std::string bos = single[0]["SpecialToken"].value("id", "");
      for (const auto& [piece, id] : entries) {
        if (piece == bos) v.bos_id = static_cast<int32_t>(id);
      }
      v.add_bos = v.bos_id >= 0;
    }
  }

  if (cfg.is_object()) {
    ASSIGN_OR_RETURN(int32_t bos, ConfigTokenId(cfg, "bos_token", v, entries));
    ASSIGN_OR_RETURN(int32_t eos, ConfigTokenId(cfg, "eos_token", v, entries));
    ASSIGN_OR_RETURN(int32_t cunk, ConfigTokenId(cfg, "unk_token", v, entries));
    ASSIGN_OR_RETURN(int32_t pad, ConfigTokenId(cfg, "pad_token", v, entries));
    if (bos != -2) v.bos_id = bos;
    if (eos != -2) v.eos_id = eos;
    if (cunk >= 0) v.unk_id = cunk;
    if (pad != -2) v.pad_id = pad;
    if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) {
      v.add_bos = cfg["add_bos_token"].get<bool>();
    }
    if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean()) {
      v.add_eos = cfg["add_eos_token"].get<bool>();
    }
    if (cfg.contains("chat_template")) {
      const json& ct = cfg["chat_template"];
      if (ct.is_string()) {
        v.chat_template = ct.get<std::string>();
      } else if (ct.is_array()) {
        for (const json& t : ct) {
          if (!t.is_object() || !t.contains("template")) continue;
          if (v.chat_template.empty() || t.value("name", "") == "default") {
            v.chat_template = t["template"].get<std::string>();
          }
          if (t.value("name", "") == "default") break;
        }
      }
    }
  }
  // Tokens that end a turn in common chat formats also end generation.
  for (const char* eog : {"<|eot_id|>", "<|im_end|>", "<|endoftext|>", "<|end_of_text|>",
                          "<|eom_id|>", "<end_of_turn>", "<|end|>"}) {
    for (const Added& a : added) {
      if (a.content == eog && a.id != v.eos_id && a.special) {
        v.eos_ids.push_back(static_cast<int32_t>(a.id));
      }
    }
  }
  if (v.eos_id < 0 && !v.eos_ids.empty()) v.eos_id = v.eos_ids.front();
  ASSIGN_OR_RETURN(auto tok, tokenizer_internal::BpeTokenizer::Create(std::move(v), opts));
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(
    std::string_view tokenizer_json, std::string_view tokenizer_config_json) {
  const json root = json::parse(tokenizer_json, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return Invalid("not valid JSON");
  json cfg;
  if (!tokenizer_config_json.empty()) {
    cfg = json::parse(tokenizer_config_json, nullptr, /*allow_exceptions=*/false);
    if (cfg.is_discarded() || !cfg.is_object()) {
      return absl::InvalidArgumentError("tokenizer_config.json: not a valid JSON object");
    }
  }
  try {
    return Build(root, cfg);
  } catch (const json::exception& e) {
    return Invalid(e.what());
  }
}

}  // namespace compressd
