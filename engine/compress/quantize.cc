#include "engine/compress/quantize.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <numeric>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/match.h"
#include "engine/core/mmap_file.h"
#include "kernels/gemm.h"
#include "kernels/quant.h"

namespace compressd {
namespace {

using Family = QuantFormatSpec::Family;

// Packs rows [0, rows) in contiguous row blocks on `threads` threads and concatenates the
// blocks' buffers. Valid for formats whose every buffer is row-major with a fixed size per
// row (group formats: codes + GroupScale; per-row int8: codes + scale + sum), so the result
// is byte-identical to one pack over all rows. Blocks hold at most ~4M input values, so a
// caller that converts its block's rows inside `pack` never holds the whole tensor in fp32
// (a 128k x 2048 embedding would be 1 GB). Loading is otherwise one core per layer.
template <typename PackFn>
kernels::PackedQuant PackRowBlocks(int64_t rows, int64_t cols, int threads, PackFn pack) {
  constexpr int64_t kMinRowsPerBlock = 64, kMaxValuesPerBlock = int64_t{1} << 22;
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int64_t max_rows = std::max(kMinRowsPerBlock, kMaxValuesPerBlock / std::max<int64_t>(1, cols));
  const int64_t n = std::max<int64_t>(
      {int64_t{1}, (rows + max_rows - 1) / max_rows, std::min<int64_t>(threads, rows / kMinRowsPerBlock)});
  if (n == 1) return pack(int64_t{0}, rows);
  std::vector<kernels::PackedQuant> parts(static_cast<size_t>(n));
  std::atomic<int64_t> next{0};
  std::vector<std::thread> workers;
  for (int64_t w = 0; w < std::min<int64_t>(threads, n); ++w) {
    workers.emplace_back([&] {
      for (int64_t i = next++; i < n; i = next++) parts[i] = pack(rows * i / n, rows * (i + 1) / n);
    });
  }
  for (auto& t : workers) t.join();
  kernels::PackedQuant out;
  out.view = parts[0].view;
  out.view.rows = rows;
  out.buffers.resize(parts[0].buffers.size());
  for (size_t b = 0; b < out.buffers.size(); ++b) {
    size_t total = 0;
    for (const auto& p : parts) total += p.buffers[b].size();
    out.buffers[b].reserve(total);
    for (auto& p : parts) {
      out.buffers[b].insert(out.buffers[b].end(), p.buffers[b].begin(), p.buffers[b].end());
      std::vector<uint8_t>().swap(p.buffers[b]);
    }
  }
  out.Bind();
  return out;
}

Linear FromPacked(kernels::PackedQuant p, const std::string& name) {
  Linear l;
  auto holder = std::make_shared<kernels::PackedQuant>(std::move(p));
  holder->Bind();
  l.w = holder->view;
  l.format_name = name;
  l.storage.push_back(std::shared_ptr<const void>(holder, holder.get()));
  return l;
}

}  // namespace

absl::StatusOr<QuantFormatSpec> ParseQuantFormat(const std::string& name_in) {
  QuantFormatSpec f;
  std::string name = name_in;
  if (absl::EndsWith(name, "+gptq")) {
    f.method = QuantMethod::kGptq;
    name.resize(name.size() - 5);
  } else if (absl::EndsWith(name, "+quantease")) {
    f.method = QuantMethod::kQuantEase;
    name.resize(name.size() - 10);
  }
  auto bad = [&]() {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown weight format '", name_in,
        "'; known: f32, f16, bf16, int8, w8a8, llm-int8[-t<thr>], int{2,3,4,8}[-g<32|64|128>], "
        "spqr3, spqr4, mixllm-<avg bits>, each int{2,3,4}-g format optionally +gptq/+quantease"));
  };
  if (name == "f32" || name == "fp32" || name == "f16" || name == "fp16" || name == "bf16") {
    f.family = Family::kDense;
    f.dense_dtype = name == "bf16" ? DType::kBF16 : (name == "f32" || name == "fp32") ? DType::kF32 : DType::kF16;
    f.name = name;
  } else if (name == "int8") {
    f.family = Family::kInt8Row;
    f.bits = 8;
    f.name = name;
  } else if (name == "w8a8") {
    f.family = Family::kW8A8;
    f.bits = 8;
    f.name = name;
  } else if (absl::StartsWith(name, "llm-int8")) {
    f.family = Family::kLlmInt8;
    f.bits = 8;
    f.name = "llm-int8";
    const std::string rest = name.substr(8);
    if (!rest.empty()) {
      if (!absl::StartsWith(rest, "-t") || !absl::SimpleAtof(rest.substr(2), &f.outlier_threshold)) {
        return bad();
      }
      f.name = name;
    }
  } else if (name == "spqr3" || name == "spqr4") {
    f.family = Family::kSpqr;
    f.bits = name[4] - '0';
    f.group_size = 16;
    f.name = name;
  } else if (absl::StartsWith(name, "mixllm-")) {
    f.family = Family::kMixed;
    if (!absl::SimpleAtod(name.substr(7), &f.mixed_avg_bits) || f.mixed_avg_bits < 4.0 ||
        f.mixed_avg_bits > 9.0) {
      return bad();
    }
    f.group_size = 128;
    f.name = name;
  } else if (absl::StartsWith(name, "int")) {
    std::vector<std::string> parts = absl::StrSplit(name.substr(3), '-');
    int bits = 0;
    if (parts.empty() || !absl::SimpleAtoi(parts[0], &bits) ||
        (bits != 2 && bits != 3 && bits != 4 && bits != 8)) {
      return bad();
    }
    int group = bits == 2 ? 32 : (bits == 3 ? 64 : 128);
    if (parts.size() == 2) {
      if (parts[1].size() < 2 || parts[1][0] != 'g' || !absl::SimpleAtoi(parts[1].substr(1), &group) ||
          (group != 16 && group != 32 && group != 64 && group != 128 && group != 256)) {
        return bad();
      }
    } else if (parts.size() > 2) {
      return bad();
    }
    f.family = Family::kGroup;
    f.bits = bits;
    f.group_size = group;
    f.name = absl::StrCat("int", bits, "-g", group);
  } else {
    return bad();
  }
  if (f.method != QuantMethod::kRtn) {
    if (f.family != Family::kGroup || f.bits == 8) return bad();
    f.name += f.method == QuantMethod::kGptq ? "+gptq" : "+quantease";
  }
  return f;
}

double FormatBitsPerParam(const QuantFormatSpec& f, int64_t cols) {
  switch (f.family) {
    case Family::kDense: return 8.0 * kernels::DTypeSize(f.dense_dtype);
    case Family::kInt8Row:
    case Family::kW8A8:
    case Family::kLlmInt8: return 8.0 + 64.0 / std::max<int64_t>(cols, 1);
    case Family::kGroup: return f.bits + 32.0 / f.group_size;
    case Family::kSpqr: return f.bits + 16.0 / f.group_size + 0.01 * 32;
    case Family::kMixed: return f.mixed_avg_bits;
  }
  return 32;
}

std::vector<double> RowSalience(const std::vector<float>& w, int64_t rows, int64_t cols,
                                const ActivationStats* stats) {
  std::vector<double> s(static_cast<size_t>(rows), 0.0);
  const bool has = stats != nullptr && stats->cols == cols && stats->n_samples > 0;
  for (int64_t r = 0; r < rows; ++r) {
    double acc = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const double v = w[r * cols + c];
      acc += v * v * (has ? stats->MeanSq(c) : 1.0);
    }
    s[r] = acc;
  }
  return s;
}

// Per-column weights of the RTN fit: the calibration activations' mean square per input
// column, or empty (unweighted) without usable statistics.
static std::vector<float> ColumnWeights(const ActivationStats* stats, int64_t cols) {
  std::vector<float> cw;
  if (stats == nullptr || stats->cols != cols || stats->n_samples <= 0) return cw;
  cw.resize(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) cw[c] = static_cast<float>(stats->MeanSq(c));
  return cw;
}

absl::StatusOr<Linear> QuantizeMatrix(const std::string& tensor_name, const std::vector<float>& w,
                                      int64_t rows, int64_t cols, const QuantFormatSpec& f,
                                      const ActivationStats* stats, const QuantizeOptions& opt) {
  const bool stats_ok = stats != nullptr && stats->cols == cols && stats->n_samples > 0;
  const std::vector<float> diag = ColumnWeights(stats, cols);
  const float* cw = diag.empty() ? nullptr : diag.data();
  switch (f.family) {
    case Family::kDense: {
      TensorView t;
      t.name = tensor_name;
      t.dtype = DType::kF32;
      t.shape = {rows, cols};
      t.data = w.data();
      t.bytes = w.size() * 4;
      return MakeDenseLinear(t, f.dense_dtype);
    }
    case Family::kInt8Row:
    case Family::kW8A8:
      return FromPacked(PackRowBlocks(rows, cols, opt.threads,
                                      [&](int64_t r0, int64_t r1) {
                                        return kernels::PackInt8Rows(w.data() + r0 * cols, r1 - r0,
                                                                     cols, f.family == Family::kW8A8);
                                      }),
                        f.name);
    case Family::kLlmInt8: {
      std::vector<uint32_t> outliers;
      if (stats_ok) {
        for (int64_t c = 0; c < cols; ++c) {
          if (stats->col_abs_max[c] > f.outlier_threshold) outliers.push_back(static_cast<uint32_t>(c));
        }
      }
      Linear l = FromPacked(kernels::PackLlmInt8(w.data(), rows, cols, outliers), f.name);
      return l;
    }
    case Family::kSpqr:
      return FromPacked(kernels::PackSpqr(w.data(), rows, cols, f.bits, 0.01f, cw), f.name);
    case Family::kMixed: {
      std::vector<uint8_t> bits;
      if (opt.row_bits != nullptr && static_cast<int64_t>(opt.row_bits->size()) == rows) {
        bits = *opt.row_bits;
      } else {
        // Fraction p of 8-bit rows: 4 + 4p + 32/g = avg.
        const double p = std::clamp((f.mixed_avg_bits - 4.0 - 32.0 / f.group_size) / 4.0, 0.0, 1.0);
        const auto sal = RowSalience(w, rows, cols, stats);
        std::vector<int64_t> order(static_cast<size_t>(rows));
        std::iota(order.begin(), order.end(), 0);
        std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return sal[a] > sal[b]; });
        bits.assign(static_cast<size_t>(rows), 4);
        const int64_t k = static_cast<int64_t>(std::llround(p * rows));
        for (int64_t i = 0; i < k; ++i) bits[order[i]] = 8;
      }
      return FromPacked(kernels::PackMixed(w.data(), rows, cols, bits, f.group_size, cw), f.name);
    }
    case Family::kGroup: {
      if (f.method == QuantMethod::kRtn || !stats_ok || !stats->has_xtx()) {
        return FromPacked(PackRowBlocks(rows, cols, opt.threads,
                                        [&](int64_t r0, int64_t r1) {
                                          return kernels::PackGroup(w.data() + r0 * cols, r1 - r0,
                                                                    cols, f.bits, f.group_size, cw);
                                        }),
                          f.name);
      }
      GroupCodes gc =
          f.method == QuantMethod::kGptq
              ? GptqQuantize(w, rows, cols, f.bits, f.group_size, stats->xtx, opt.damping, opt.threads)
              : QuantEaseQuantize(w, rows, cols, f.bits, f.group_size, stats->xtx, opt.damping,
                                  f.passes, opt.threads);
      return FromPacked(kernels::PackGroupCodes(gc.codes.data(), gc.scale.data(), gc.min.data(),
                                                rows, cols, f.bits, f.group_size),
                        f.name);
    }
  }
  return absl::InternalError("unreachable");
}

absl::StatusOr<Linear> QuantizeLinear(const TensorView& t, const QuantFormatSpec& f,
                                      const ActivationStats* stats, const QuantizeOptions& opt) {
  if (t.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, " is not a matrix"));
  }
  if (f.family == Family::kDense) return MakeDenseLinear(t, f.dense_dtype);
  const int64_t rows = t.shape[0], cols = t.shape[1];
  const bool stats_ok = stats != nullptr && stats->cols == cols && stats->n_samples > 0;
  const bool rtn_group = f.family == Family::kGroup &&
                         (f.method == QuantMethod::kRtn || !stats_ok || !stats->has_xtx());
  const bool int8_rows = f.family == Family::kInt8Row || f.family == Family::kW8A8;
  if (t.storage == StorageType::kPlain && (rtn_group || int8_rows) &&
      t.bytes == static_cast<size_t>(rows * cols) * kernels::DTypeSize(t.dtype)) {
    // Streaming path: each row block is converted to fp32 and packed on its own, so peak
    // memory is the packed layer plus a few blocks, never the layer in fp32.
    const std::vector<float> diag = ColumnWeights(stats, cols);
    const float* cw = diag.empty() ? nullptr : diag.data();
    const size_t row_bytes = static_cast<size_t>(cols) * kernels::DTypeSize(t.dtype);
    std::atomic<bool> failed{false};
    kernels::PackedQuant packed =
        PackRowBlocks(rows, cols, opt.threads, [&](int64_t r0, int64_t r1) {
          TensorView part = t;
          part.data = static_cast<const uint8_t*>(t.data) + static_cast<size_t>(r0) * row_bytes;
          part.shape = {r1 - r0, cols};
          part.bytes = static_cast<size_t>(r1 - r0) * row_bytes;
          auto w = TensorToF32(part);
          // Block read: its file pages (if mapped) can leave resident memory right away.
          MmapFile::ReleasePages(part.data, part.bytes);
          if (!w.ok()) {
            failed = true;
            w = std::vector<float>(static_cast<size_t>((r1 - r0) * cols), 0.0f);
          }
          return rtn_group ? kernels::PackGroup(w->data(), r1 - r0, cols, f.bits, f.group_size, cw)
                           : kernels::PackInt8Rows(w->data(), r1 - r0, cols,
                                                   f.family == Family::kW8A8);
        });
    if (failed) return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, ": unsupported dtype"));
    return FromPacked(std::move(packed), f.name);
  }
  std::vector<float> w;
  if (t.storage == StorageType::kPlain) {
    ASSIGN_OR_RETURN(w, TensorToF32(t));
  } else {
    ASSIGN_OR_RETURN(Linear dense, MakeDenseLinear(t, DType::kF32));
    w.resize(static_cast<size_t>(dense.rows() * dense.cols()));
    kernels::DequantizeRows(dense.w, 0, dense.rows(), w.data());
  }
  return QuantizeMatrix(t.name, w, rows, cols, f, stats, opt);
}

double LayerError(const Linear& q, const std::vector<float>& w, const ActivationStats* stats) {
  const int64_t rows = q.rows(), cols = q.cols();
  std::vector<float> d(static_cast<size_t>(rows * cols));
  if (q.first) {
    // Low-rank: materialise U * V.
    std::vector<float> u(static_cast<size_t>(rows * q.w.cols)), v(static_cast<size_t>(q.first->rows() * cols));
    kernels::DequantizeRows(q.w, 0, rows, u.data());
    kernels::DequantizeRows(q.first->w, 0, q.first->rows(), v.data());
    const int64_t k = q.w.cols;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < k; ++i) {
        const float a = u[r * k + i];
        for (int64_t c = 0; c < cols; ++c) d[r * cols + c] += a * v[i * cols + c];
      }
  } else {
    kernels::DequantizeRows(q.w, 0, rows, d.data());
  }
  const bool full = stats != nullptr && stats->cols == cols && stats->has_xtx();
  const bool diag = stats != nullptr && stats->cols == cols && stats->n_samples > 0;
  double num = 0, den = 0;
  std::vector<double> e(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float* wr = w.data() + r * cols;
    for (int64_t c = 0; c < cols; ++c) e[c] = static_cast<double>(wr[c]) - d[r * cols + c];
    if (full) {
      for (int64_t i = 0; i < cols; ++i) {
        const double* hi = stats->xtx.data() + i * cols;
        double ae = 0, aw = 0;
        for (int64_t j = 0; j < cols; ++j) {
          ae += hi[j] * e[j];
          aw += hi[j] * wr[j];
        }
        num += e[i] * ae;
        den += wr[i] * aw;
      }
    } else {
      for (int64_t c = 0; c < cols; ++c) {
        const double h = diag ? stats->col_sq_sum[c] : 1.0;
        num += e[c] * e[c] * h;
        den += static_cast<double>(wr[c]) * wr[c] * h;
      }
    }
  }
  return den > 0 ? num / den : 0.0;
}

}  // namespace compressd
