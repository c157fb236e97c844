#include "engine/compress/dfloat11.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/compress/sparse_util.h"

namespace compressd {

bool IsDf11FormatName(const std::string& format) { return format == kDf11FormatName; }

Linear LinearFromDf11(kernels::Df11Packed p) {
  const int64_t rows = p.rows, cols = p.cols;
  std::vector<std::vector<uint8_t>> b;
  b.push_back(std::move(p.data));
  b.push_back(std::move(p.stream));
  b.push_back(std::move(p.offsets));
  b.push_back(std::move(p.lengths));
  return LinearFromBuffers(kernels::Df11Format(), rows, cols, std::move(b), kDf11FormatName);
}

absl::StatusOr<Linear> CompressDf11(const TensorView& t) {
  if (t.shape.size() != 2 || t.shape[0] <= 0 || t.shape[1] <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, " is not a matrix"));
  }
  const int64_t rows = t.shape[0], cols = t.shape[1];
  if (t.storage == StorageType::kPlain && t.dtype == DType::kBF16) {
    if (static_cast<size_t>(rows * cols) * 2 > t.bytes) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, ": data is too short"));
    }
    return LinearFromDf11(kernels::PackDf11(static_cast<const uint16_t*>(t.data), rows, cols));
  }
  ASSIGN_OR_RETURN(std::vector<float> w, WeightValuesF32(t));
  return LinearFromDf11(kernels::PackDf11F32(w.data(), rows, cols));
}

}  // namespace compressd
