// Hand-written equivalents of the pre-tokenizer split regexes (std::regex has no \p{L}).
// Each matcher returns the length, in code points, of the regex match at position i, trying
// the alternatives in the regex's order as a backtracking engine would.
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/tokenizer_impl.h"
#include "engine/model/unicode.h"

namespace compressd::tokenizer_internal {
namespace {

class Matcher {
 public:
  Matcher(const std::vector<uint32_t>& cps, size_t end) : cp_(cps), n_(end) {}

  bool L(size_t i) const { return i < n_ && IsLetter(cp_[i]); }
  bool N(size_t i) const { return i < n_ && IsNumber(cp_[i]); }
  bool S(size_t i) const { return i < n_ && IsWhitespace(cp_[i]); }
  bool Nl(size_t i) const { return i < n_ && (cp_[i] == '\r' || cp_[i] == '\n'); }
  bool Other(size_t i) const { return i < n_ && !IsWhitespace(cp_[i]) && !L(i) && !N(i); }
  bool Is(size_t i, uint32_t c) const { return i < n_ && cp_[i] == c; }

  template <typename Pred>
  size_t Run(size_t i, Pred pred) const {
    while (pred(i)) ++i;
    return i;
  }

  // 's|'t|'re|'ve|'m|'ll|'d, optionally ASCII case-insensitive. Returns the length or 0.
  size_t Contraction(size_t i, bool ignore_case) const {
    if (!Is(i, '\'') || i + 1 >= n_) return 0;
    auto lower = [&](size_t k) -> uint32_t {
      if (k >= n_) return 0;
      uint32_t c = cp_[k];
      if (ignore_case && c >= 'A' && c <= 'Z') c += 'a' - 'A';
      return c;
    };
    const uint32_t a = lower(i + 1);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    const uint32_t b = lower(i + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
  }

  // \s+(?!\S) then \s+ : a whitespace run, leaving its last character to the next word
  // when a non-space follows.
  size_t WhitespaceTail(size_t i) const {
    const size_t j = Run(i, [&](size_t k) { return S(k); });
    if (j == i) return 0;
    if (j == n_ || j - 1 == i) return j - i;
    return j - 1 - i;
  }

  // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  size_t Gpt2(size_t i) const {
    if (size_t c = Contraction(i, false)) return c;
    const size_t j = Is(i, ' ') ? i + 1 : i;
    if (L(j)) return Run(j, [&](size_t k) { return L(k); }) - i;
    if (N(j)) return Run(j, [&](size_t k) { return N(k); }) - i;
    if (Other(j)) return Run(j, [&](size_t k) { return Other(k); }) - i;
    return WhitespaceTail(i);
  }

  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
  //  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  size_t Llama3(size_t i, size_t max_digits) const {
    if (size_t c = Contraction(i, true)) return c;
    if (L(i)) return Run(i, [&](size_t k) { return L(k); }) - i;
    if (i < n_ && !Nl(i) && !N(i) && L(i + 1)) return Run(i + 1, [&](size_t k) { return L(k); }) - i;
    if (N(i)) {
      size_t j = i;
      while (j - i < max_digits && N(j)) ++j;
      return j - i;
    }
    const size_t j = Is(i, ' ') ? i + 1 : i;
    if (Other(j)) {
      const size_t k = Run(j, [&](size_t m) { return Other(m); });
      return Run(k, [&](size_t m) { return Nl(m); }) - i;
    }
    if (S(i)) {
      const size_t end = Run(i, [&](size_t k) { return S(k); });
      for (size_t k = end; k > i; --k) {
        if (Nl(k - 1)) return k - i;
      }
    }
    return WhitespaceTail(i);
  }

 private:
  const std::vector<uint32_t>& cp_;
  size_t n_;
};

}  // namespace

absl::StatusOr<PreTokenizerKind> PreTokenizerFromName(std::string_view name) {
  if (name.empty() || name == "default" || name == "gpt2" || name == "gpt-2") {
    return PreTokenizerKind::kGpt2;
  }
  if (name == "llama3" || name == "llama-bpe" || name == "llama-v3") {
    return PreTokenizerKind::kLlama3;
  }
  if (name == "qwen2" || name == "deepseek-r1-qwen") return PreTokenizerKind::kQwen2;
  if (name == "smollm") return PreTokenizerKind::kSmolLm;
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer pre-tokenizer '", Av(name), "' is not supported"));
}

void PreTokenize(PreTokenizerKind kind, std::string_view text,
                 std::vector<std::string_view>* out) {
  if (kind == PreTokenizerKind::kNone) {
    if (!text.empty()) out->push_back(text);
    return;
  }
  std::vector<uint32_t> cps;
  std::vector<size_t> offs;  // byte offset of each code point, plus text.size()
  cps.reserve(text.size());
  offs.reserve(text.size() + 1);
  for (size_t pos = 0; pos < text.size();) {
    offs.push_back(pos);
    cps.push_back(DecodeUtf8(text, &pos));
  }
  offs.push_back(text.size());
  auto emit = [&](size_t a, size_t b) { out->push_back(text.substr(offs[a], offs[b] - offs[a])); };

  auto split_range = [&](size_t begin, size_t end) {
    const Matcher m(cps, end);
    size_t i = begin;
    while (i < end) {
      size_t len = 0;
      switch (kind) {
        case PreTokenizerKind::kLlama3: len = m.Llama3(i, 3); break;
        case PreTokenizerKind::kQwen2: len = m.Llama3(i, 1); break;
        default: len = m.Gpt2(i); break;
      }
      if (len == 0) len = 1;  // unreachable: the alternatives cover every character
      emit(i, i + len);
      i += len;
    }
  };

  if (kind != PreTokenizerKind::kSmolLm) {
    split_range(0, cps.size());
    return;
  }
  // Digits(individual_digits): every digit is its own word; the rest goes through GPT-2.
  size_t start = 0;
  for (size_t i = 0; i < cps.size(); ++i) {
    if (!IsNumber(cps[i])) continue;
    split_range(start, i);
    emit(i, i + 1);
    start = i + 1;
  }
  split_range(start, cps.size());
}

}  // namespace compressd::tokenizer_internal
