#include "engine/core/byte_size.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace compressd {

absl::StatusOr<int64_t> ParseByteSize(const std::string& text) {
  const std::string s = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  size_t i = 0;
  while (i < s.size() && (absl::ascii_isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  std::string unit(absl::StripLeadingAsciiWhitespace(s.substr(i)));
  if (absl::EndsWith(unit, "b")) unit.pop_back();  // "mb" = "m", "mib" = "mi", "b" = ""
  const bool binary = absl::EndsWith(unit, "i");
  if (binary) unit.pop_back();
  int power = -1;
  if (unit.empty()) power = binary ? -1 : 0;
  else if (unit == "k") power = 1;
  else if (unit == "m") power = 2;
  else if (unit == "g") power = 3;
  else if (unit == "t") power = 4;
  double x = 0;
  if (power < 0 || i == 0 || !absl::SimpleAtod(s.substr(0, i), &x) || !(x >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad size '", text, "' (a number with an optional unit: B, kB, MB, GB, TB = powers of "
        "1000; KiB, MiB, GiB, TiB = powers of 1024)"));
  }
  const double bytes = x * std::pow(binary ? 1024.0 : 1000.0, power);
  if (!(bytes <= 9.0e18)) return absl::InvalidArgumentError(absl::StrCat("size too large '", text, "'"));
  return static_cast<int64_t>(bytes);
}

}  // namespace compressd
