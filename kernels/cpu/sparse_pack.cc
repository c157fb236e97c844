// Pack functions, validation and the scalar decode reference of the sparse formats
// (layouts in kernels/sparse.h).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/sparse.h"

namespace compressd::kernels {
namespace {

int64_t Blocks(int64_t cols) { return (cols + kSparseBlockCols - 1) / kSparseBlockCols; }

template <typename T>
void Append(std::vector<uint8_t>* v, T x) {
  const size_t at = v->size();
  v->resize(at + sizeof(T));
  std::memcpy(v->data() + at, &x, sizeof(T));
}

template <typename T>
T At(const void* base, size_t i) {
  T x;
  std::memcpy(&x, static_cast<const uint8_t*>(base) + i * sizeof(T), sizeof(T));
  return x;
}

}  // namespace

PackedWeight SparsePacked::View() const {
  PackedWeight w;
  w.format = format;
  w.rows = rows;
  w.cols = cols;
  w.data = data.data();
  w.data_bytes = data.size();
  for (int i = 0; i < 4; ++i) {
    w.aux[i] = aux[i].empty() ? nullptr : aux[i].data();
    w.aux_bytes[i] = aux[i].size();
  }
  return w;
}

SparsePacked PackSparseUnstructured(const float* w, const uint8_t* keep, int64_t rows,
                                    int64_t cols) {
  SparsePacked p;
  p.format.kind = WeightKind::kSparse;
  p.format.sparsity = SparsityPattern::kUnstructured;
  p.format.dtype = DType::kF16;
  p.format.bits = 16;
  p.rows = rows;
  p.cols = cols;
  const int64_t words = (cols + 63) / 64, nblk = Blocks(cols);
  uint32_t nnz = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < words; ++b) {
      uint64_t bits = 0;
      for (int64_t c = b * 64; c < std::min(cols, b * 64 + 64); ++c) {
        if (c % kSparseBlockCols == 0) Append<uint32_t>(&p.aux[1], nnz);
        if (keep[r * cols + c]) {
          bits |= uint64_t{1} << (c % 64);
          Append<uint16_t>(&p.data, F32ToF16(w[r * cols + c]));
          ++nnz;
        }
      }
      Append<uint64_t>(&p.aux[0], bits);
    }
    if (cols == 0) {
      for (int64_t b = 0; b < nblk; ++b) Append<uint32_t>(&p.aux[1], nnz);
    }
    Append<uint32_t>(&p.aux[1], nnz);
  }
  p.data.resize(p.data.size() + kSparsePadHalves * 2, 0);
  return p;
}

SparsePacked PackSparseTwoFour(const float* w, const uint8_t* keep, int64_t rows, int64_t cols) {
  SparsePacked p;
  p.format.kind = WeightKind::kSparse;
  p.format.sparsity = SparsityPattern::kTwoFour;
  p.format.dtype = DType::kF16;
  p.format.bits = 16;
  p.rows = rows;
  p.cols = cols;
  const int64_t cp = (cols + 15) / 16 * 16;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t piece = 0; piece < cp / 16; ++piece) {
      uint16_t idx = 0;
      for (int g = 0; g < 4; ++g) {
        const int64_t c0 = piece * 16 + g * 4;
        int pos[2];
        int k = 0;
        for (int j = 0; j < 4 && k < 2; ++j) {
          if (c0 + j < cols && keep[r * cols + c0 + j]) pos[k++] = j;
        }
        // Fewer than 2 kept: fill with unused positions (stored as zeros).
        for (int j = 0; j < 4 && k < 2; ++j) {
          if (k == 1 && pos[0] == j) continue;
          const bool kept = c0 + j < cols && keep[r * cols + c0 + j];
          if (!kept) pos[k++] = j;
        }
        std::sort(pos, pos + 2);
        idx |= static_cast<uint16_t>((pos[0] | (pos[1] << 2)) << (4 * g));
        for (int s = 0; s < 2; ++s) {
          const int64_t c = c0 + pos[s];
          const bool kept = c < cols && keep[r * cols + c];
          Append<uint16_t>(&p.data, F32ToF16(kept ? w[r * cols + c] : 0.0f));
        }
      }
      Append<uint16_t>(&p.aux[0], idx);
    }
  }
  p.data.resize(p.data.size() + kSparsePadHalves * 2, 0);
  return p;
}

SparsePacked PackSparseGroup(const float* w, const uint8_t* keep_group, int64_t rows,
                             int64_t cols, int bits) {
  SparsePacked p;
  p.format.kind = WeightKind::kSparse;
  p.format.sparsity = SparsityPattern::kGroup;
  p.format.dtype = DType::kF16;
  p.format.bits = static_cast<uint8_t>(bits);
  p.format.group_size = kSparseGroupCols;
  p.rows = rows;
  p.cols = cols;
  const int64_t ng = (cols + kSparseGroupCols - 1) / kSparseGroupCols;
  const int64_t gw = (ng + 63) / 64;
  const int64_t groups_per_block = kSparseBlockCols / kSparseGroupCols;
  uint32_t kept = 0;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<uint64_t> bm(static_cast<size_t>(gw), 0);
    for (int64_t g = 0; g < ng; ++g) {
      if (g % groups_per_block == 0) Append<uint32_t>(&p.aux[1], kept);
      if (!keep_group[r * ng + g]) continue;
      bm[g / 64] |= uint64_t{1} << (g % 64);
      ++kept;
      float v[kSparseGroupCols];
      for (int j = 0; j < kSparseGroupCols; ++j) {
        const int64_t c = g * kSparseGroupCols + j;
        v[j] = c < cols ? w[r * cols + c] : 0.0f;
      }
      if (bits == 4) {
        float amax = 0.0f;
        for (float x : v) amax = std::max(amax, std::fabs(x));
        const uint16_t dh = F32ToF16(amax / 7.0f);
        const float d = F16ToF32(dh);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < kSparseGroupCols; j += 2) {
          auto code = [&](float x) {
            return static_cast<uint8_t>(std::clamp(std::nearbyint(x * id) + 8.0f, 0.0f, 15.0f));
          };
          Append<uint8_t>(&p.data, static_cast<uint8_t>(code(v[j]) | (code(v[j + 1]) << 4)));
        }
        Append<uint16_t>(&p.aux[2], dh);
      } else {
        for (float x : v) Append<uint16_t>(&p.data, F32ToF16(x));
      }
    }
    if (cols == 0) Append<uint32_t>(&p.aux[1], kept);
    Append<uint32_t>(&p.aux[1], kept);
    for (uint64_t b : bm) Append<uint64_t>(&p.aux[0], b);
  }
  p.data.resize(p.data.size() + 64, 0);
  return p;
}

std::string SparseFormatName(const WeightFormat& f) {
  switch (f.sparsity) {
    case SparsityPattern::kUnstructured: return "sparse-f16";
    case SparsityPattern::kTwoFour: return "2:4-f16";
    case SparsityPattern::kGroup: return f.bits == 4 ? "gqsa-g16-int4" : "gqsa-g16-f16";
    default: return "sparse-?";
  }
}

std::string ValidateSparse(const PackedWeight& w) {
  const WeightFormat& f = w.format;
  if (f.kind != WeightKind::kSparse || f.variant != 0) return "not a sparse format (variant 0)";
  if (w.rows < 0 || w.cols < 0) return "negative shape";
  if (w.rows > 0 && w.cols > 0 && (w.data == nullptr || w.aux[0] == nullptr)) {
    return "missing data or aux0";
  }
  const int64_t rows = w.rows, cols = w.cols, nblk = Blocks(cols);
  const size_t offs_bytes = static_cast<size_t>(rows) * (nblk + 1) * 4;
  auto check_offsets = [&](int64_t units_per_row_block, auto count_block,
                           size_t total_units) -> std::string {
    if (w.aux_bytes[1] != offs_bytes || (offs_bytes && !w.aux[1])) {
      return "aux1 (block offsets) has the wrong size";
    }
    uint32_t prev = 0;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t b = 0; b <= nblk; ++b) {
        const uint32_t o = At<uint32_t>(w.aux[1], r * (nblk + 1) + b);
        if (o < prev) return "aux1 offsets decrease";
        if (b > 0 && o - prev != count_block(r, b - 1)) return "aux1 offsets disagree with bitmap";
        prev = o;
        if (b == nblk && r + 1 < rows) {
          // the next row starts where this one ends
          if (At<uint32_t>(w.aux[1], (r + 1) * (nblk + 1)) != o) return "aux1 rows not contiguous";
        }
      }
    }
    if (prev > total_units) return "values shorter than the offsets say";
    (void)units_per_row_block;
    return "";
  };
  switch (f.sparsity) {
    case SparsityPattern::kUnstructured: {
      if (f.dtype != DType::kF16 || f.bits != 16) return "unstructured: dtype must be f16";
      const int64_t words = (cols + 63) / 64;
      if (w.aux_bytes[0] != static_cast<size_t>(rows * words * 8)) return "aux0 (bitmap) size";
      if (w.data_bytes < kSparsePadHalves * 2) return "data lacks padding";
      if (cols % 64) {
        for (int64_t r = 0; r < rows; ++r) {
          if (At<uint64_t>(w.aux[0], r * words + words - 1) >> (cols % 64)) return "bits past cols";
        }
      }
      auto count = [&](int64_t r, int64_t b) -> uint32_t {
        uint32_t n = 0;
        const int64_t w0 = b * kSparseBlockCols / 64, w1 = std::min(words, w0 + kSparseBlockCols / 64);
        for (int64_t i = w0; i < w1; ++i) n += __builtin_popcountll(At<uint64_t>(w.aux[0], r * words + i));
        return n;
      };
      if (rows > 0 && At<uint32_t>(w.aux[1], 0) != 0) return "aux1 must start at 0";
      return check_offsets(0, count, w.data_bytes / 2 - kSparsePadHalves);
    }
    case SparsityPattern::kTwoFour: {
      if (f.dtype != DType::kF16 || f.bits != 16) return "2:4: dtype must be f16";
      const int64_t cp = (cols + 15) / 16 * 16;
      if (w.aux_bytes[0] != static_cast<size_t>(rows * (cp / 16) * 2)) return "aux0 (indices) size";
      if (w.data_bytes != static_cast<size_t>(rows * (cp / 2) * 2 + kSparsePadHalves * 2)) {
        return "data size";
      }
      for (int64_t i = 0; i < rows * (cp / 16); ++i) {
        const uint16_t idx = At<uint16_t>(w.aux[0], i);
        for (int g = 0; g < 4; ++g) {
          const int nib = (idx >> (4 * g)) & 15;
          if ((nib & 3) >= (nib >> 2)) return "2:4 index pair not increasing";
        }
      }
      return "";
    }
    case SparsityPattern::kGroup: {
      if (f.group_size != kSparseGroupCols) return "group: group_size must be 16";
      if (f.bits != 4 && f.bits != 16) return "group: bits must be 4 or 16";
      const int64_t ng = (cols + 15) / 16, gw = (ng + 63) / 64;
      if (w.aux_bytes[0] != static_cast<size_t>(rows * gw * 8)) return "aux0 (group bitmap) size";
      if (ng % 64) {
        for (int64_t r = 0; r < rows; ++r) {
          if (At<uint64_t>(w.aux[0], r * gw + gw - 1) >> (ng % 64)) return "bits past groups";
        }
      }
      const size_t per_group = f.bits == 4 ? 8 : 32;
      if (w.data_bytes < 64) return "data lacks padding";
      const size_t groups = (w.data_bytes - 64) / per_group;
      auto count = [&](int64_t r, int64_t b) -> uint32_t {
        return static_cast<uint32_t>(__builtin_popcountll(At<uint64_t>(w.aux[0], r * gw + b)));
      };
      if (rows > 0 && At<uint32_t>(w.aux[1], 0) != 0) return "aux1 must start at 0";
      std::string e = check_offsets(0, count, groups);
      if (!e.empty()) return e;
      const uint32_t total = rows ? At<uint32_t>(w.aux[1], rows * (nblk + 1) - 1) : 0;
      if (w.data_bytes != total * per_group + 64) return "data size";
      if (f.bits == 4 && w.aux_bytes[2] != total * 2) return "aux2 (scales) size";
      return "";
    }
    default:
      return "unknown sparsity pattern";
  }
}

void SparseDecodeRef(const PackedWeight& w, int64_t r, int64_t k0, int64_t len, float* out) {
  const int64_t cols = w.cols, nblk = Blocks(cols);
  switch (w.format.sparsity) {
    case SparsityPattern::kUnstructured: {
      const int64_t words = (cols + 63) / 64;
      const auto* vals = static_cast<const uint16_t*>(w.data);
      const auto* bm = static_cast<const uint64_t*>(w.aux[0]) + r * words;
      uint32_t vi = static_cast<const uint32_t*>(w.aux[1])[r * (nblk + 1) + k0 / kSparseBlockCols];
      for (int64_t c = k0; c < k0 + len; ++c) {
        out[c - k0] = (bm[c / 64] >> (c % 64)) & 1 ? F16ToF32(vals[vi++]) : 0.0f;
      }
      return;
    }
    case SparsityPattern::kTwoFour: {
      const int64_t cp = (cols + 15) / 16 * 16;
      const auto* vals = static_cast<const uint16_t*>(w.data) + r * (cp / 2);
      const auto* idx = static_cast<const uint16_t*>(w.aux[0]) + r * (cp / 16);
      for (int64_t c = k0; c < k0 + len; ++c) {
        const int nib = (idx[c / 16] >> (4 * ((c / 4) % 4))) & 15;
        const int pos = static_cast<int>(c % 4);
        const int64_t g = c / 4;
        out[c - k0] = pos == (nib & 3)    ? F16ToF32(vals[2 * g])
                      : pos == (nib >> 2) ? F16ToF32(vals[2 * g + 1])
                                          : 0.0f;
      }
      return;
    }
    case SparsityPattern::kGroup: {
      const int64_t ng = (cols + 15) / 16, gw = (ng + 63) / 64;
      const auto* bm = static_cast<const uint64_t*>(w.aux[0]) + r * gw;
      uint32_t gi = static_cast<const uint32_t*>(w.aux[1])[r * (nblk + 1) + k0 / kSparseBlockCols];
      for (int64_t g = k0 / 16; g * 16 < k0 + len; ++g) {
        float v[16] = {};
        if ((bm[g / 64] >> (g % 64)) & 1) {
          if (w.format.bits == 4) {
            const auto* q = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(gi) * 8;
            const float d = F16ToF32(static_cast<const uint16_t*>(w.aux[2])[gi]);
            for (int j = 0; j < 8; ++j) {
              v[2 * j] = d * static_cast<float>((q[j] & 15) - 8);
              v[2 * j + 1] = d * static_cast<float>((q[j] >> 4) - 8);
            }
          } else {
            const auto* h = static_cast<const uint16_t*>(w.data) + static_cast<size_t>(gi) * 16;
            for (int j = 0; j < 16; ++j) v[j] = F16ToF32(h[j]);
          }
          ++gi;
        }
        for (int j = 0; j < 16; ++j) {
          const int64_t c = g * 16 + j;
          if (c < k0 + len) out[c - k0] = v[j];
        }
      }
      return;
    }
    default:
      std::fill(out, out + len, 0.0f);
  }
}

}  // namespace compressd::kernels
