// Fuzzes config.json parsing: ParseHfConfig then Validate on whatever parsed.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = compressd::ParseHfConfig(text);
  if (config.ok()) (void)config->Validate();
  return 0;
}
