// GgufFile: a validated, read-only GGUF (v2 or v3, little-endian) file. Open() maps the file
// and checks the whole header up front: counts against the bytes left, string lengths, value
// and tensor types, dims, offsets (aligned to general.alignment) and tensor extents, all
// overflow-safe, so a malformed file is an INVALID_ARGUMENT and never a crash or a huge
// allocation. Metadata is decoded once (numeric arrays stay in the mapping); tensor data
// is never copied: View() returns a TensorView into the mapping, kept alive by `owner`.
// Immutable after Open(): any thread may read it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/core/mmap_file.h"
#include "engine/core/status.h"
#include "engine/core/tensor.h"
#include "engine/model/vocab.h"

namespace compressd {

// GGUF metadata value types (gguf_type).
enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
const char* GgufTypeName(GgufType t);
// Bytes of one scalar value of type t; 0 for string, array and unknown types.
size_t GgufScalarSize(GgufType t);

// ggml tensor types (ggml_type ids as stored in GGUF). Only F32, F16, BF16, Q8_0 and Q4_0
// can be viewed; the others are recognised (sizes known, so files list) but UNIMPLEMENTED.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};
// Name ("Q4_K") or nullptr for an id this reader does not know.
const char* GgmlTypeName(GgmlType t);
// Elements per block and bytes per block; false for unknown ids.
bool GgmlTypeTraits(GgmlType t, int64_t* block_elems, int64_t* block_bytes);

// One metadata value. Scalars: the matching field (ints widen to `i` or `u`, floats to
// `f`). Arrays: `elem_type` and `count`; strings decoded into `strings`; numeric elements
// stay little-endian in the file at `raw` (read them with the Get*Array accessors).
struct GgufValue {
  GgufType type = GgufType::kUint8;
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0.0;
  bool b = false;
  std::string str;
  GgufType elem_type = GgufType::kUint8;
  uint64_t count = 0;
  std::vector<std::string> strings;
  const uint8_t* raw = nullptr;
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::kF32;
  std::vector<int64_t> dims;  // as stored: innermost (contiguous) first
  uint64_t offset = 0;        // relative to the data section
  uint64_t bytes = 0;
};

class GgufFile {
 public:
  static absl::StatusOr<std::shared_ptr<GgufFile>> Open(const std::string& path);
  static absl::StatusOr<std::shared_ptr<GgufFile>> OpenFromBytes(std::string bytes,
                                                                 std::string name = "<memory>");
  static absl::StatusOr<std::shared_ptr<GgufFile>> FromMmap(std::shared_ptr<MmapFile> file);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::string& path() const { return file_->path(); }
  const std::shared_ptr<MmapFile>& file() const { return file_; }

  // ---- metadata -------------------------------------------------------------------
  const std::vector<std::string>& keys() const { return keys_; }  // file order
  bool Has(const std::string& key) const { return index_.contains(key); }
  const GgufValue* Find(const std::string& key) const;
  // NOT_FOUND when absent; INVALID_ARGUMENT naming the key when of another type or out
  // of range. Integer getters accept any integer type, float getters any number.
  absl::StatusOr<std::string> GetString(const std::string& key) const;
  absl::StatusOr<int64_t> GetInt(const std::string& key) const;
  absl::StatusOr<uint64_t> GetUint(const std::string& key) const;
  absl::StatusOr<double> GetFloat(const std::string& key) const;
  absl::StatusOr<bool> GetBool(const std::string& key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(const std::string& key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(const std::string& key) const;
  absl::StatusOr<std::vector<float>> GetFloatArray(const std::string& key) const;
  // As above, but `fallback` when the key is absent (still INVALID_ARGUMENT if ill-typed).
  absl::StatusOr<int64_t> GetIntOr(const std::string& key, int64_t fallback) const;
  absl::StatusOr<double> GetFloatOr(const std::string& key, double fallback) const;
  absl::StatusOr<bool> GetBoolOr(const std::string& key, bool fallback) const;
  absl::StatusOr<std::string> GetStringOr(const std::string& key, std::string fallback) const;

  // ---- tensors --------------------------------------------------------------------
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* FindTensor(const std::string& name) const;
  // Zero-copy view named `info.name`, shape reversed to row-major. Q8_0/Q4_0 give
  // storage kQ8_0/kQ4_0 with dtype kF32 ("dequantizes to f32"). UNIMPLEMENTED naming the
  // tensor and type for other ggml types.
  absl::StatusOr<TensorView> View(const GgufTensorInfo& info) const;
  absl::StatusOr<TensorView> View(const std::string& name) const;

 private:
  GgufFile() = default;
  absl::Status Parse();

  std::shared_ptr<MmapFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_start_ = 0;
  std::vector<std::string> keys_;
  std::vector<GgufValue> values_;
  absl::flat_hash_map<std::string, size_t> index_;
  std::vector<GgufTensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> tensor_index_;
};

// The tokenizer stored in tokenizer.ggml.* (+ tokenizer.chat_template). INVALID_ARGUMENT
// naming the key for missing/ill-typed/inconsistent fields; UNIMPLEMENTED for tokenizer
// models other than llama (spm) and gpt2 (byte-level BPE).
absl::StatusOr<VocabData> ReadGgufVocab(const GgufFile& gguf);

}  // namespace compressd
