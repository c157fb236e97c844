// StreamDecoder: emits whole UTF-8 characters as tokens arrive.
#include <string>

#include "engine/model/tokenizer.h"
#include "engine/model/unicode.h"

namespace compressd {
namespace {

// True when s[pos..] is a proper prefix of a valid UTF-8 sequence that more bytes could
// complete.
bool IsIncompletePrefix(const std::string& s, size_t pos) {
  const auto b0 = static_cast<uint8_t>(s[pos]);
  size_t need;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
  } else {
    return false;
  }
  const size_t have = s.size() - pos;
  if (have >= need) return false;
  for (size_t i = 1; i < have; ++i) {
    const auto b = static_cast<uint8_t>(s[pos + i]);
    if ((b & 0xC0) != 0x80) return false;
    // The second byte narrows the range for E0/ED/F0/F4 leads.
    if (i == 1 && ((b0 == 0xE0 && b < 0xA0) || (b0 == 0xED && b > 0x9F) ||
                   (b0 == 0xF0 && b < 0x90) || (b0 == 0xF4 && b > 0x8F))) {
      return false;
    }
  }
  return true;
}

// Moves the complete part of *pending into the result: valid characters as they are,
// invalid bytes as U+FFFD. A trailing incomplete sequence stays unless flush is set.
std::string TakeComplete(std::string* pending, bool flush) {
  std::string out;
  size_t pos = 0;
  while (pos < pending->size()) {
    const size_t len = ValidUtf8Length(*pending, pos);
    if (len > 0) {
      out.append(*pending, pos, len);
      pos += len;
      continue;
    }
    if (!flush && IsIncompletePrefix(*pending, pos)) break;
    AppendUtf8(kReplacementChar, &out);
    ++pos;
  }
  pending->erase(0, pos);
  return out;
}

}  // namespace

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special)
    : tok_(tok), skip_special_(skip_special) {}

std::string StreamDecoder::Append(int32_t id) {
  if (id < 0 || id >= tok_.vocab_size()) return "";
  if (skip_special_ && tok_.IsSpecial(id)) return "";
  std::string bytes = tok_.TokenBytes(id);
  if (bytes.empty()) return "";
  if (first_) {
    first_ = false;
    const VocabData& v = tok_.vocab();
    if (v.type == VocabType::kSpm && v.add_space_prefix && bytes[0] == ' ') bytes.erase(0, 1);
  }
  pending_.append(bytes);
  return TakeComplete(&pending_, /*flush=*/false);
}

std::string StreamDecoder::Flush() { return TakeComplete(&pending_, /*flush=*/true); }

}  // namespace compressd
