// Quality evaluation on real text, the way llama.cpp's `perplexity --kl-divergence` does it
// so that figures are comparable: the text is tokenized once (with BOS), cut into chunks of
// `context` tokens whose first token is replaced by BOS, and the second half of each chunk
// is scored. Against a reference model (same checkpoint, uncompressed weights and fp32 KV)
// it also reports mean KL(P_ref || P_test) and top-1 agreement over the scored positions.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "engine/core/status.h"

namespace compressd {

struct EvalOptions {
  std::string model;
  std::string weights = "auto";
  int64_t weight_memory_budget = 0;  // > 0: the evaluated side fits its linears in this many bytes
  std::string kv_cache = "fp32";
  std::string calibration_file;
  std::string reference_weights = "f32";
  std::string reference_kv_cache = "fp32";
  bool compare = true;         // run the reference and report KL / top-1
  std::string text_file;
  int64_t max_bytes = 0;       // use only the first max_bytes of the text (0 = all)
  int32_t context = 256;
  int32_t max_chunks = 0;      // 0 = all
  int32_t threads = 0;
  int32_t kv_block_size = 16;
  // Tokens per Forward call within a chunk: 0 = the whole chunk in one step, except for codecs
  // that encode a block from the attention its tokens received (KvCodec::SealAfterAttend),
  // which run one block per step so that every position attends over the encoded earlier
  // blocks exactly as in decode (its own block from the fp16 residual window).
  int32_t prefill_step = 0;
  // Calibration tokens for codecs that NeedsCalibration (CSKV): at most this many.
  int64_t kv_calibration_tokens = 32 * 1024;
  // (chunks done, chunks total)
  std::function<void(int, int)> progress;
};

struct EvalResult {
  double perplexity = 0;
  double perplexity_stderr = 0;  // of the mean NLL, propagated to ppl
  double reference_perplexity = 0;
  double kl_divergence = 0;      // mean over scored tokens
  double kl_divergence_p99 = 0;
  double top1_agreement = 0;     // fraction
  double weight_bits_per_param = 0;
  uint64_t weight_bytes = 0;
  double kv_bytes_per_token = 0;
  double reference_kv_bytes_per_token = 0;
  int64_t tokens_scored = 0;
  int32_t chunks = 0;
  double seconds = 0;
};

absl::StatusOr<EvalResult> RunEval(const EvalOptions& options);

// Fits a codec that NeedsCalibration (CSKV) to `model`: runs up to max_tokens of text_file through
// the model in chunks of `context` tokens with fp32 KV, recording the K/V second moments, and
// passes them to codec->Calibrate. No-op for other codecs. RunEval calls it for the evaluated
// codec (calibration text: EvalOptions::calibration_file, else calibration.txt next to the
// model); a server would call it once after LoadModel.
class ThreadPool;
struct Model;
class KvCodec;
absl::Status CalibrateKvCodec(std::shared_ptr<const Model> model, KvCodec* codec,
                              const std::string& text_file, int32_t context, int64_t max_tokens,
                              ThreadPool* pool);

}  // namespace compressd
