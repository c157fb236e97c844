// Unicode helpers for the tokenizer: UTF-8 decoding/encoding that never fails (invalid
// bytes decode as one-byte U+FFFD units), and the character classes the pre-tokenizers
// need (\p{L}, \p{N}, \s). Tables come from scripts/gen_unicode_tables.py. Pure functions,
// thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace compressd {

inline constexpr uint32_t kReplacementChar = 0xFFFD;

// Decodes the code point at s[*pos] and advances *pos past it. An invalid or truncated
// sequence yields kReplacementChar and advances by one byte. *pos must be < s.size().
uint32_t DecodeUtf8(std::string_view s, size_t* pos);

// Length in bytes of the valid UTF-8 sequence starting at s[pos], or 0 when the bytes there
// are not a complete valid sequence.
size_t ValidUtf8Length(std::string_view s, size_t pos);

// Appends the UTF-8 encoding of cp (cp > 0x10FFFF or a surrogate appends U+FFFD).
void AppendUtf8(uint32_t cp, std::string* out);

bool IsLetter(uint32_t cp);      // general category L*
bool IsNumber(uint32_t cp);      // general category N*
bool IsWhitespace(uint32_t cp);  // the White_Space property (what \s matches)

namespace unicode_internal {
struct CodepointRange {
  uint32_t lo;
  uint32_t hi;  // inclusive
};
extern const CodepointRange kLetterRanges[];
extern const size_t kLetterRangesSize;
extern const CodepointRange kNumberRanges[];
extern const size_t kNumberRangesSize;
}  // namespace unicode_internal

}  // namespace compressd
