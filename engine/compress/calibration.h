// Calibration statistics for compression: per linear *input* (q/k/v share the attention
// input, gate/up share the MLP input), collected by running the dense model on calibration
// text. Compressors (GPTQ/QuantEase, MixLLM salience, LLM.int8 outliers, low-rank, sparse)
// read them; nothing here is used at inference time.
//
// Ownership: CalibrationData owns every ActivationStats; compressors get const pointers that
// stay valid while the CalibrationData lives. Built once on the loading thread; read-only
// (and so thread-safe) afterwards.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/core/status.h"

namespace compressd {

struct Model;

// Second-moment statistics of the inputs x (rows = tokens, cols = input features) of one
// linear layer: H = X^T X accumulated over n_samples tokens.
struct ActivationStats {
  int64_t cols = 0;
  int64_t n_samples = 0;
  // diag(X^T X): sum over tokens of x_c^2, [cols].
  std::vector<double> col_sq_sum;
  // max over tokens of |x_c|, [cols] (LLM.int8 outlier columns).
  std::vector<float> col_abs_max;
  // Full X^T X, row-major [cols][cols]; empty unless collected (needed by GPTQ/QuantEase).
  std::vector<double> xtx;

  bool has_xtx() const { return !xtx.empty(); }
  // Mean of x_c^2 (diag of H / n), 0 when no samples.
  double MeanSq(int64_t c) const {
    return n_samples > 0 ? col_sq_sum[static_cast<size_t>(c)] / n_samples : 0.0;
  }
  // Adds a [n][cols] block of inputs.
  void Accumulate(const float* x, int64_t n, bool full);
};

struct CalibrationOptions {
  std::string text_file;        // plain UTF-8 text
  int64_t max_tokens = 16384;   // tokens read from the file
  int32_t context = 256;        // tokens per independent forward chunk
  bool full_xtx = true;         // also accumulate X^T X (cols^2 doubles per input)
  int32_t threads = 0;          // 0 = hardware concurrency
};

class CalibrationData {
 public:
  // Runs `dense_model` (any formats; normally the uncompressed checkpoint) on the text and
  // records the stats of every linear input. Llama-family models only.
  static absl::StatusOr<std::unique_ptr<CalibrationData>> Collect(const Model& dense_model,
                                                                  const CalibrationOptions& opt);

  // Stats for the input of the linear named by its HF tensor name, e.g.
  // "model.layers.3.self_attn.k_proj.weight" (shares stats with q/v), "lm_head.weight".
  // nullptr when unknown.
  const ActivationStats* ForLinear(const std::string& tensor_name) const;

  // Keys: "layers.<i>.attn_in", "layers.<i>.o_in", "layers.<i>.mlp_in", "layers.<i>.down_in",
  // "lm_head_in".
  std::map<std::string, ActivationStats>& stats() { return stats_; }
  const std::map<std::string, ActivationStats>& stats() const { return stats_; }
  int64_t tokens() const { return tokens_; }

 private:
  std::map<std::string, ActivationStats> stats_;
  int64_t tokens_ = 0;
};

// The stats key of a linear's input from its tensor name ("" when unknown).
std::string CalibrationKeyForTensor(const std::string& tensor_name);

}  // namespace compressd
