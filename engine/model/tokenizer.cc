// BpeTokenizer construction, encoding pipeline (added tokens, normalization,
// pre-tokenization, BPE), decoding, and the Tokenizer factory functions.
#include "engine/model/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/model/tokenizer_impl.h"
#include "engine/model/unicode.h"

namespace compressd {
namespace tokenizer_internal {
namespace {

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the rest map to
// U+0100 upwards in byte order.
uint32_t ByteToCodepoint(uint8_t b, uint32_t* next_extra) {
  const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
  return printable ? b : 0x100 + (*next_extra)++;
}

// "<0xNN>" -> NN, or -1.
int ParseByteToken(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int v = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = piece[i];
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else {
      return -1;
    }
    v = v * 16 + d;
  }
  return v;
}

absl::Status CheckId(const char* name, int32_t id, size_t n) {
  if (id < -1 || id >= static_cast<int64_t>(n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer ", name, " ", id, " is out of range [0, ", n, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Create(VocabData vocab,
                                                                    BpeOptions opts) {
  std::unique_ptr<BpeTokenizer> tok(new BpeTokenizer(std::move(vocab), opts));
  RETURN_IF_ERROR(tok->Init());
  return tok;
}

absl::Status BpeTokenizer::Init() {
  const size_t n = vocab_.tokens.size();
  if (n == 0) return absl::InvalidArgumentError("tokenizer vocabulary is empty");
  if (n > (1u << 30)) return absl::InvalidArgumentError("tokenizer vocabulary is too large");
  if (vocab_.token_types.empty()) vocab_.token_types.assign(n, TokenType::kNormal);
  if (vocab_.token_types.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer has ", vocab_.token_types.size(),
                                                   " token types for ", n, " tokens"));
  }
  if (!vocab_.scores.empty() && vocab_.scores.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer has ", vocab_.scores.size(), " scores for ", n, " tokens"));
  }
  RETURN_IF_ERROR(CheckId("bos_id", vocab_.bos_id, n));
  RETURN_IF_ERROR(CheckId("eos_id", vocab_.eos_id, n));
  RETURN_IF_ERROR(CheckId("unk_id", vocab_.unk_id, n));
  RETURN_IF_ERROR(CheckId("pad_id", vocab_.pad_id, n));
  for (int32_t id : vocab_.eos_ids) RETURN_IF_ERROR(CheckId("end-of-generation id", id, n));
  if (vocab_.type == VocabType::kSpm) opts_.pre = PreTokenizerKind::kNone;

  piece_to_id_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (!vocab_.tokens[i].empty()) piece_to_id_.emplace(vocab_.tokens[i], static_cast<int32_t>(i));
  }

  std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
  if (vocab_.type == VocabType::kSpm) {
    for (size_t i = 0; i < n; ++i) {
      const bool marked = vocab_.token_types[i] == TokenType::kByte;
      if (!marked && !(opts_.byte_fallback && vocab_.token_types[i] == TokenType::kNormal)) {
        continue;
      }
      const int b = ParseByteToken(vocab_.tokens[i]);
      if (b < 0) continue;
      if (byte_ids_[b] < 0) byte_ids_[b] = static_cast<int32_t>(i);
      vocab_.token_types[i] = TokenType::kByte;
      opts_.byte_fallback = true;
    }
  } else {
    uint32_t extra = 0;
    for (int b = 0; b < 256; ++b) {
      const uint32_t cp = ByteToCodepoint(static_cast<uint8_t>(b), &extra);
      AppendUtf8(cp, &byte_to_char_[b]);
      char_to_byte_[cp] = static_cast<uint8_t>(b);
    }
  }

  if (vocab_.type == VocabType::kSpm) {
    for (int c = 0; c < 128; ++c) isolated_[c] = piece_to_id_.contains(std::string(1, c));
    for (size_t i = 0; i < n; ++i) {
      const TokenType t = vocab_.token_types[i];
      const std::string& piece = vocab_.tokens[i];
      if (piece.size() < 2 || t == TokenType::kByte || t == TokenType::kControl ||
          t == TokenType::kUnknown) {
        continue;
      }
      for (char c : piece) {
        if (static_cast<uint8_t>(c) < 128) isolated_[static_cast<uint8_t>(c)] = false;
      }
    }
  }

  merges_.reserve(vocab_.merges.size());
  for (size_t r = 0; r < vocab_.merges.size(); ++r) {
    const std::string& m = vocab_.merges[r];
    const size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
    if (sp == std::string::npos || sp + 1 >= m.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer merge ", r, " ('", m, "') is not two tokens"));
    }
    const std::string_view left = std::string_view(m).substr(0, sp);
    const std::string_view right = std::string_view(m).substr(sp + 1);
    const std::string joined = absl::StrCat(Av(left), Av(right));
    int32_t ids[3];
    const std::string_view parts[3] = {left, right, joined};
    for (int k = 0; k < 3; ++k) {
      auto it = piece_to_id_.find(Av(parts[k]));
      if (it == piece_to_id_.end()) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer merge ", r, " ('", m,
                                                       "') references token '", Av(parts[k]),
                                                       "' that is not in the vocabulary"));
      }
      ids[k] = it->second;
    }
    const uint64_t key = (static_cast<uint64_t>(ids[0]) << 32) | static_cast<uint32_t>(ids[1]);
    merges_.try_emplace(key, MergeInfo{static_cast<int32_t>(r), ids[2]});
  }

  for (size_t i = 0; i < n; ++i) {
    const TokenType t = vocab_.token_types[i];
    const bool added = t == TokenType::kControl || t == TokenType::kUserDefined ||
                       t == TokenType::kUnknown;
    if (added && !vocab_.tokens[i].empty()) {
      added_.push_back({vocab_.tokens[i], static_cast<int32_t>(i), t != TokenType::kUserDefined});
    }
  }
  std::stable_sort(added_.begin(), added_.end(), [](const AddedToken& a, const AddedToken& b) {
    return a.text.size() > b.text.size();
  });
  for (size_t k = 0; k < added_.size(); ++k) {
    added_by_first_byte_[static_cast<uint8_t>(added_[k].text[0])].push_back(
        static_cast<uint32_t>(k));
  }

  decoded_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& piece = vocab_.tokens[i];
    std::string& d = decoded_[i];
    switch (vocab_.token_types[i]) {
      case TokenType::kByte:
        d.assign(1, static_cast<char>(ParseByteToken(piece)));
        continue;
      case TokenType::kControl:
      case TokenType::kUserDefined:
      case TokenType::kUnknown:
      case TokenType::kUnused:
        d = piece;
        continue;
      case TokenType::kNormal:
        break;
    }
    if (vocab_.type == VocabType::kSpm) {
      for (size_t pos = 0; pos < piece.size();) {
        if (piece.compare(pos, kSpmSpace.size(), kSpmSpace) == 0) {
          d.push_back(' ');
          pos += kSpmSpace.size();
        } else {
          d.push_back(piece[pos++]);
        }
      }
    } else {
      for (size_t pos = 0; pos < piece.size();) {
        const size_t start = pos;
        const uint32_t cp = DecodeUtf8(piece, &pos);
        auto it = char_to_byte_.find(cp);
        if (it != char_to_byte_.end()) {
          d.push_back(static_cast<char>(it->second));
        } else {
          d.append(piece, start, pos - start);
        }
      }
    }
  }
  return absl::OkStatus();
}

void BpeTokenizer::EncodeText(std::string_view text, std::vector<int32_t>* out) const {
  if (text.empty()) return;
  if (vocab_.type == VocabType::kSpm) {
    std::string norm;
    norm.reserve(text.size() + text.size() / 4 + 3);
    if (vocab_.add_space_prefix) norm.append(kSpmSpace);
    for (char c : text) {
      if (c == ' ') {
        norm.append(kSpmSpace);
      } else {
        norm.push_back(c);
      }
    }
    size_t start = 0;
    for (size_t i = 0; i < norm.size(); ++i) {
      const auto c = static_cast<uint8_t>(norm[i]);
      if (c >= 128 || !isolated_[c]) continue;
      EncodeWord(std::string_view(norm).substr(start, i - start), out);
      EncodeWord(std::string_view(norm).substr(i, 1), out);
      start = i + 1;
    }
    EncodeWord(std::string_view(norm).substr(start), out);
    return;
  }
  std::string prefixed;
  if (opts_.add_prefix_space && text[0] != ' ') {
    prefixed = absl::StrCat(" ", Av(text));
    text = prefixed;
  }
  std::vector<std::string_view> words;
  PreTokenize(opts_.pre, text, &words);
  std::string mapped;
  for (std::string_view w : words) {
    mapped.clear();
    for (char c : w) mapped.append(byte_to_char_[static_cast<uint8_t>(c)]);
    EncodeWord(mapped, out);
  }
}

std::vector<int32_t> BpeTokenizer::Encode(std::string_view text, bool add_special,
                                          bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_special && vocab_.add_bos && vocab_.bos_id >= 0) out.push_back(vocab_.bos_id);
  size_t raw_start = 0;
  for (size_t pos = 0; pos < text.size();) {
    const auto& candidates = added_by_first_byte_[static_cast<uint8_t>(text[pos])];
    const AddedToken* hit = nullptr;
    for (uint32_t k : candidates) {
      const AddedToken& a = added_[k];
      if (a.special && !parse_special) continue;
      if (text.compare(pos, a.text.size(), a.text) == 0) {
        hit = &a;
        break;
      }
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    EncodeText(text.substr(raw_start, pos - raw_start), &out);
    out.push_back(hit->id);
    pos += hit->text.size();
    raw_start = pos;
  }
  EncodeText(text.substr(raw_start), &out);
  if (add_special && vocab_.add_eos && vocab_.eos_id >= 0) out.push_back(vocab_.eos_id);
  return out;
}

std::string BpeTokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (skip_special && IsSpecial(id)) continue;
    out.append(decoded_[id]);
  }
  if (strips_leading_space() && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

std::string BpeTokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  return decoded_[id];
}

const std::string& BpeTokenizer::Piece(int32_t id) const {
  static const std::string* const kEmpty = new std::string();
  if (id < 0 || id >= vocab_size()) return *kEmpty;
  return vocab_.tokens[id];
}

int32_t BpeTokenizer::PieceToId(std::string_view piece) const {
  auto it = piece_to_id_.find(Av(piece));
  return it == piece_to_id_.end() ? -1 : it->second;
}

bool BpeTokenizer::IsSpecial(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return false;
  const TokenType t = vocab_.token_types[id];
  return t == TokenType::kControl || t == TokenType::kUnknown || t == TokenType::kUnused;
}

}  // namespace tokenizer_internal

bool Tokenizer::IsEndOfGeneration(int32_t id) const {
  if (id < 0) return false;
  const VocabData& v = vocab();
  if (id == v.eos_id) return true;
  return std::find(v.eos_ids.begin(), v.eos_ids.end(), id) != v.eos_ids.end();
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromVocab(VocabData vocab) {
  tokenizer_internal::BpeOptions opts;
  if (vocab.type == VocabType::kByteLevel) {
    ASSIGN_OR_RETURN(opts.pre, tokenizer_internal::PreTokenizerFromName(vocab.pre));
    // Llama 3's tokenizer emits a word that is itself a token without merging it.
    opts.ignore_merges = opts.pre == tokenizer_internal::PreTokenizerKind::kLlama3;
    if (vocab.merges.empty()) {
      return absl::InvalidArgumentError("byte-level tokenizer vocabulary has no merges");
    }
  }
  ASSIGN_OR_RETURN(auto tok, tokenizer_internal::BpeTokenizer::Create(std::move(vocab), opts));
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

namespace {
absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return ss.str();
}
}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromDirectory(const std::string& dir) {
  ASSIGN_OR_RETURN(std::string json, ReadWholeFile(dir + "/tokenizer.json"));
  std::string config;
  auto cfg = ReadWholeFile(dir + "/tokenizer_config.json");
  if (cfg.ok()) {
    config = std::move(cfg).value();
  } else if (!absl::IsNotFound(cfg.status())) {
    return cfg.status();
  }
  return FromJson(json, config);
}

}  // namespace compressd
