// Fuzzes the safetensors header parser: OpenFromBytes on one in-memory image, then every
// listed tensor is fetched and its first/last byte read (a view outside the image is an
// ASan report).
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/model/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto src = compressd::SafetensorsSource::OpenFromBytes(
      std::string(reinterpret_cast<const char*>(data), size));
  if (!src.ok()) return 0;
  for (const std::string& name : (*src)->Names()) {
    if (!(*src)->Has(name)) __builtin_trap();
    auto view = (*src)->Get(name);
    if (!view.ok()) __builtin_trap();  // the header promises Get() never fails when listed
    compressd::fuzz::Touch(*view);
  }
  (void)(*src)->Get("no.such.tensor");
  (void)(*src)->metadata();
  return 0;
}
