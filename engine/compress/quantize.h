// On-load quantization of one linear layer into the formats of kernels/quant.h, by
// round-to-nearest (with a per-group range search) or by a calibration-based solver
// (GPTQ, QuantEase) that minimises the layer-wise error tr((W-Q) H (W-Q)^T), H = X^T X.
//
// Thread-safety: pure functions; the solvers spread rows over `threads` std::threads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/compress/calibration.h"
#include "engine/compress/linear.h"

namespace compressd {

enum class QuantMethod : uint8_t { kRtn = 0, kGptq = 1, kQuantEase = 2 };

// A parsed weight format name:
//   int8 | w8a8 | llm-int8[-t<threshold>] | int{2,3,4,8}[-g<group>] | spqr{3,4} |
//   mixllm-<avg bits, e.g. 5 or 4.5> | f32 | f16 | bf16
// with an optional solver suffix "+gptq" / "+quantease" for the int{2,3,4}-g formats.
struct QuantFormatSpec {
  std::string name;  // canonical
  enum class Family { kDense, kInt8Row, kW8A8, kLlmInt8, kGroup, kSpqr, kMixed } family =
      Family::kDense;
  DType dense_dtype = DType::kF32;
  int bits = 0;
  int group_size = 0;
  float outlier_threshold = 6.0f;  // llm-int8
  double mixed_avg_bits = 5.0;     // mixllm: target bits/param of the layer's codes+scales
  QuantMethod method = QuantMethod::kRtn;
  int passes = 3;                  // QuantEase passes
};

// INVALID_ARGUMENT naming the format when unknown.
absl::StatusOr<QuantFormatSpec> ParseQuantFormat(const std::string& name);

// Bits per parameter of the format (codes + scales, excluding padding) for a cols-wide row.
double FormatBitsPerParam(const QuantFormatSpec& f, int64_t cols);

struct QuantizeOptions {
  int threads = 0;  // solvers; 0 = hardware concurrency
  double damping = 0.01;  // H += damping * mean(diag H) * I
  // MixLLM: rows to keep in 8 bits, chosen by the caller (global ranking); empty = the layer
  // picks by its own salience ranking to reach mixed_avg_bits.
  const std::vector<uint8_t>* row_bits = nullptr;
};

// Quantizes w [rows][cols] fp32. stats may be null (RTN, unweighted) except for GPTQ/QuantEase
// (they need stats->xtx; without it they fall back to RTN weighted by diag H when present).
absl::StatusOr<Linear> QuantizeMatrix(const std::string& tensor_name, const std::vector<float>& w,
                                      int64_t rows, int64_t cols, const QuantFormatSpec& f,
                                      const ActivationStats* stats, const QuantizeOptions& opt);

absl::StatusOr<Linear> QuantizeLinear(const TensorView& t, const QuantFormatSpec& f,
                                      const ActivationStats* stats, const QuantizeOptions& opt);

// Per-row salience of w for MixLLM: sum_c w[r][c]^2 * diag(H)[c] (diag = 1 without stats).
std::vector<double> RowSalience(const std::vector<float>& w, int64_t rows, int64_t cols,
                                const ActivationStats* stats);

// Calibrated group quantization: returns codes [rows][cols] and scale/min [rows][n_groups]
// (n_groups = ceil(cols / group)), minimising tr((W-Q) H (W-Q)^T) approximately.
struct GroupCodes {
  std::vector<uint8_t> codes;
  std::vector<float> scale, min;
};
GroupCodes GptqQuantize(const std::vector<float>& w, int64_t rows, int64_t cols, int bits,
                        int group, const std::vector<double>& h, double damping, int threads);
GroupCodes QuantEaseQuantize(const std::vector<float>& w, int64_t rows, int64_t cols, int bits,
                             int group, const std::vector<double>& h, double damping, int passes,
                             int threads);

// Relative output error of a Linear vs the fp32 weights: tr(E H E^T) / tr(W H W^T), or the
// plain Frobenius ratio without stats (diag H used when xtx is absent).
double LayerError(const Linear& q, const std::vector<float>& w, const ActivationStats* stats);

}  // namespace compressd
