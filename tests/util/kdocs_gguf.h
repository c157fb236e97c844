// Test fixture: writes the kdocs-7m checkpoint (../shared/models/kdocs-7m) as a GGUF file the
// way llama.cpp's converter lays it out (GGUF names, Q/K rows permuted for interleaved RoPE,
// vocabulary in metadata with scores from the BPE merge ranks), matrices in `type`, norms F32.
#pragma once

#include <string>

#include "engine/model/gguf.h"

namespace compressd::testing {

// Returns the path of a new temporary .gguf file (the caller removes it). Failures are
// reported as gtest failures.
std::string WriteKdocsGguf(const std::string& kdocs_dir, GgmlType type);

}  // namespace compressd::testing
