// Helpers shared by the libFuzzer targets (header-only: each *_fuzz.cc is one binary).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "engine/core/tensor.h"

namespace compressd::fuzz {

// ../shared as the build saw it, or $COMPRESSD_SHARED_DIR.
inline std::string SharedDir() {
  const char* env = std::getenv("COMPRESSD_SHARED_DIR");
  return env != nullptr ? env : COMPRESSD_SHARED_DIR_DEFAULT;
}

inline std::string CorpusDir() {
  const char* env = std::getenv("COMPRESSD_FUZZ_CORPUS_DIR");
  return env != nullptr ? env : COMPRESSD_FUZZ_CORPUS_DIR;
}

// File contents, or "" when unreadable.
inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Reads the first and last byte of a view so that ASan reports a view that points
// outside its buffer.
inline void Touch(const TensorView& v) {
  if (v.data == nullptr || v.bytes == 0) return;
  const volatile uint8_t* p = static_cast<const uint8_t*>(v.data);
  volatile uint8_t sink = p[0];
  sink = p[v.bytes - 1];
  (void)sink;
}

}  // namespace compressd::fuzz
