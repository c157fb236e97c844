#include "engine/compress/sparse_util.h"

#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/mmap_file.h"
#include "kernels/ggml_quant.h"

namespace compressd {

absl::StatusOr<std::vector<float>> WeightValuesF32(const TensorView& t) {
  if (t.storage == StorageType::kPlain) return TensorToF32(t);
  if (t.shape.size() != 2 || t.shape[1] % kernels::kGgufBlock != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", t.name, ": GGUF block tensor must be a matrix with cols % 32 == 0"));
  }
  ASSIGN_OR_RETURN(Linear l, MakeGgufLinear(t));
  std::vector<float> out(static_cast<size_t>(t.numel()));
  kernels::GgufQuantFormatOps().dequantize_rows(l.w, 0, l.w.rows, out.data());
  return out;
}

Linear LinearFromBuffers(const kernels::WeightFormat& f, int64_t rows, int64_t cols,
                         std::vector<std::vector<uint8_t>> buffers, std::string format_name) {
  Linear l;
  l.w.format = f;
  l.w.rows = rows;
  l.w.cols = cols;
  l.format_name = std::move(format_name);
  buffers.resize(5);
  for (size_t i = 0; i < 5; ++i) {
    if (buffers[i].empty()) continue;
    auto buf = std::make_shared<std::vector<uint8_t>>(std::move(buffers[i]));
    const void* p = buf->data();
    if (i == 0) {
      l.w.data = p;
      l.w.data_bytes = buf->size();
    } else {
      l.w.aux[i - 1] = p;
      l.w.aux_bytes[i - 1] = buf->size();
    }
    l.storage.push_back(std::shared_ptr<const void>(buf, p));
  }
  return l;
}

Linear LinearFromSparse(kernels::SparsePacked p) {
  std::vector<std::vector<uint8_t>> b;
  b.push_back(std::move(p.data));
  for (auto& a : p.aux) b.push_back(std::move(a));
  return LinearFromBuffers(p.format, p.rows, p.cols, std::move(b),
                           kernels::SparseFormatName(p.format));
}

absl::StatusOr<Linear> MakeGgufLinear(const TensorView& t) {
  if (t.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, " is not a matrix"));
  }
  Linear l;
  l.w.format = t.storage == StorageType::kQ8_0 ? kernels::GgufQ8_0Format()
                                                : kernels::GgufQ4_0Format();
  l.format_name = t.storage == StorageType::kQ8_0 ? "gguf-q8_0" : "gguf-q4_0";
  l.w.rows = t.shape[0];
  l.w.cols = t.shape[1];
  l.w.data = t.data;
  const size_t expect = kernels::GgufQuantBytes(l.w.format, l.w.rows, l.w.cols);
  l.w.data_bytes = t.bytes >= expect ? expect : t.bytes;
  const std::string why = kernels::ValidateGgufQuant(l.w);
  if (!why.empty()) return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, ": ", why));
  l.storage.push_back(t.owner);
  return l;
}

}  // namespace compressd
