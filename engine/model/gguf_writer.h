// GgufWriter: builds a GGUF v3 file (metadata of every value type, tensors in F32, F16,
// BF16, Q8_0 or Q4_0) for tests and `compressd bench`. Metadata keys and tensors keep the
// order in which they are added; tensor data is aligned to `alignment` (general.alignment is
// written when it is not the default 32). Shapes are given row-major (outermost first) and
// stored innermost first, as GGUF does. Not thread-safe; one writer per file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/core/status.h"
#include "engine/model/gguf.h"

namespace compressd {

class GgufWriter {
 public:
  GgufWriter() = default;

  void AddUint8(const std::string& key, uint8_t v);
  void AddInt8(const std::string& key, int8_t v);
  void AddUint16(const std::string& key, uint16_t v);
  void AddInt16(const std::string& key, int16_t v);
  void AddUint32(const std::string& key, uint32_t v);
  void AddInt32(const std::string& key, int32_t v);
  void AddUint64(const std::string& key, uint64_t v);
  void AddInt64(const std::string& key, int64_t v);
  void AddFloat32(const std::string& key, float v);
  void AddFloat64(const std::string& key, double v);
  void AddBool(const std::string& key, bool v);
  void AddString(const std::string& key, const std::string& v);
  void AddStringArray(const std::string& key, const std::vector<std::string>& v);
  void AddInt32Array(const std::string& key, const std::vector<int32_t>& v);
  void AddFloat32Array(const std::string& key, const std::vector<float>& v);
  // Any numeric element type: `count` little-endian elements of `elem` at `data`.
  void AddArray(const std::string& key, GgufType elem, const void* data, uint64_t count);

  // Power of two; also emits general.alignment (uint32) when not 32.
  void SetAlignment(uint32_t alignment);

  // Raw tensor bytes already in `type`'s layout (any ggml type with known block sizes, so
  // tests can write types the reader cannot view). INVALID_ARGUMENT when the size does not
  // match the shape or the row is not whole blocks.
  absl::Status AddTensorBytes(const std::string& name, GgmlType type,
                              const std::vector<int64_t>& shape, std::string bytes);
  // f32 values converted (F16/BF16) or quantized (Q8_0/Q4_0) into `type`.
  absl::Status AddTensor(const std::string& name, GgmlType type, const std::vector<int64_t>& shape,
                         const float* values);

  std::string Serialize() const;
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> shape;
    std::string bytes;
  };
  void AddScalar(const std::string& key, GgufType type, const void* v, size_t size);

  std::string kv_;  // encoded metadata entries
  uint64_t n_kv_ = 0;
  uint32_t alignment_ = 32;
  std::vector<Tensor> tensors_;
};

}  // namespace compressd
