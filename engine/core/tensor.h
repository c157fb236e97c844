// TensorView: a named, typed, shaped view of bytes owned elsewhere (an mmap'd checkpoint
// or an engine buffer), kept alive by `owner`. core/ knows no model.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/types.h"

namespace compressd {

using kernels::DType;

// Storage types a checkpoint may hold beyond plain element types (GGUF block formats).
enum class StorageType : uint8_t {
  kPlain = 0,  // elements of `dtype`
  kQ8_0 = 1,   // GGUF block of 32: fp16 scale + 32 x int8
  kQ4_0 = 2,   // GGUF block of 32: fp16 scale + 16 bytes of 4-bit codes
};

struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  StorageType storage = StorageType::kPlain;
  std::vector<int64_t> shape;  // outermost first (row-major), as in safetensors
  const void* data = nullptr;
  size_t bytes = 0;
  std::shared_ptr<const void> owner;  // keeps `data` alive
  // The model goes on reading these bytes through another view (a tied lm_head's embedding
  // table): what is built from this view must never rewrite them in place.
  bool shared = false;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// Owned fp32 buffer with a shape (activations, converted weights).
struct Buffer {
  std::vector<float> data;
  std::vector<int64_t> shape;
};

}  // namespace compressd
