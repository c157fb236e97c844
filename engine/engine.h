// Engine: the one object the server (and the CLI) talks to. It owns the model, the
// backend, the KV cache and one engine thread that runs continuous batching.
//
// Threads: Submit/Cancel/Stats may be called from any thread (gRPC threads). Event
// callbacks run on the engine thread: they must be quick and must not call back into
// the engine except Cancel(). Exactly one final event (finished = true) is delivered for
// every accepted request, whatever happens (stop, length, cancel, error, shutdown).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/core/status.h"
#include "engine/model/chat_template.h"

namespace compressd {

class Tokenizer;

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  int32_t top_k = 0;         // 0 = off
  float top_p = 1.0f;        // 1 = off
  float min_p = 0.0f;        // 0 = off
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::optional<uint64_t> seed;
};

enum class FinishReason : uint8_t { kNone = 0, kStop = 1, kLength = 2, kCancelled = 3, kError = 4 };
const char* FinishReasonName(FinishReason r);

struct GenerationRequest {
  std::string request_id;
  std::vector<int32_t> prompt_tokens;  // already tokenized (Engine::Tokenize / chat)
  int32_t max_tokens = 0;              // 0 = until the context is full
  SamplingParams sampling;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int32_t top_logprobs = -1;  // -1 = no logprobs; 0..20 = chosen + top-n
  int32_t priority = 0;
  // KV codec for this request: "" or the engine's codec = as the server; the codec the KV
  // pressure ladder demotes to (ModelSummary::kv_cache_request_codecs) = this request's cold,
  // full, unshared blocks are demoted eagerly, as soon as a pair is available (about half the
  // KV bytes for its history). Anything else: INVALID_ARGUMENT from Submit.
  std::string kv_cache;
};

struct TokenLogprob {
  int32_t token_id = 0;
  float logprob = 0.0f;
};

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_tokens = 0;
  double time_to_first_token_s = 0;
  double e2e_latency_s = 0;
  double queue_time_s = 0;
  uint64_t kv_bytes = 0;
  int32_t preemptions = 0;
};

// One streamed update. Text holds only complete UTF-8 characters, stop strings withheld.
struct GenerationEvent {
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<TokenLogprob> chosen_logprobs;           // one per token when requested
  std::vector<std::vector<TokenLogprob>> top_logprobs;  // one list per token
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  std::string stop_reason;
  absl::Status error;  // set with kError
  Usage usage;         // set on the final event
};

using EventCallback = std::function<void(GenerationEvent&&)>;

struct EngineOptions {
  std::string model;              // directory, .gguf file, or random:<shape>
  std::string weights = "auto";   // weight compression preset or recipe file (see compress/)
  int64_t weight_memory_budget = 0;  // > 0: per-layer formats chosen to fit (LoadOptions)
  bool mmap_weights = false;      // read stored-format weights in place (LoadOptions)
  std::string kv_cache = "fp16";  // KV codec name, combinations joined with '+'
  std::string calibration_file;
  std::string device = "cpu";
  int32_t tensor_parallel = 1;    // GPUs to shard over (needs the CUDA backend)
  int32_t threads = 0;            // 0 = all cores
  int64_t kv_cache_memory = 0;    // bytes; 0 = enough for max_running x context
  int32_t kv_block_size = 16;
  int32_t max_batch_tokens = 512; // prefill chunk budget per engine step
  int32_t max_running = 64;       // sequences decoded together
  int32_t max_queue = 256;        // waiting requests before RESOURCE_EXHAUSTED
  bool prefix_caching = true;
  // KV pressure ladder (engine/sched/ladder.h): when blocks run out, recompress cold blocks of
  // running sequences to the codec's next smaller step (int8 -> int4, int4 -> int2: two blocks
  // into one) before preempting. Only codecs with KvCodec::CanDemote take it (int8/int4 and
  // their kN/vN variants, on the CPU); others preempt as before. Never below
  // kv_pressure_min_bits (2, 4 or 8; 8 turns the ladder off for every codec).
  bool kv_pressure_ladder = true;
  int32_t kv_pressure_min_bits = 2;
  int32_t context_length = 0;     // 0 = the model's
  uint64_t random_seed = 1234;    // for random:<shape> weights
};

struct TensorGroupStats {
  std::string name;
  std::string format;
  uint64_t params = 0;
  uint64_t bytes = 0;
};

struct ModelSummary {
  std::string model_id;
  std::string architecture;
  int32_t context_length = 0;
  int32_t vocab_size = 0;
  uint64_t parameters = 0;
  uint64_t weight_bytes = 0;
  std::vector<TensorGroupStats> groups;
  std::string kv_codec;
  double kv_bytes_per_token = 0;
  int32_t kv_block_size = 0;
  int64_t kv_capacity_tokens = 0;
  std::string backend;
  int32_t max_batch_tokens = 0;
  int32_t max_running = 0;
  // Non-empty values GenerationRequest::kv_cache may take: the codec's name (and its ladder
  // label when that differs, e.g. "int8"), then the ladder's smaller codec when it has one.
  std::vector<std::string> kv_cache_request_codecs;
};

struct EngineStats {
  int32_t running = 0;
  int32_t waiting = 0;
  double kv_usage_ratio = 0;
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_used = 0;
  uint64_t preemptions_total = 0;
  // KV pressure ladder: demotions (each merges two blocks into one at the smaller codec and
  // frees one block), the codec step they took (labels: "int4" -> "int2"; empty when the
  // ladder is off for this engine) and the engine-thread time spent re-encoding.
  // kv_demotions_requested_total: those of kv_demotions_total made eagerly for requests that
  // asked for the smaller codec (GenerationRequest::kv_cache), not under memory pressure.
  uint64_t kv_demotions_total = 0;
  uint64_t kv_demotions_requested_total = 0;
  std::string kv_demotion_from;
  std::string kv_demotion_to;
  double kv_demotion_seconds_total = 0;
  uint64_t prompt_tokens_total = 0;
  uint64_t generation_tokens_total = 0;
  uint64_t prefix_cache_hits_total = 0;  // prompt tokens served from cached blocks
  uint64_t steps_total = 0;
};

class Engine {
 public:
  virtual ~Engine() = default;

  // Loads (and compresses) the model and starts the engine thread.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);

  // Validates and enqueues. Errors: INVALID_ARGUMENT (empty prompt, token id out of
  // range, bad sampling values, prompt + max_tokens beyond the context),
  // RESOURCE_EXHAUSTED (queue full), UNAVAILABLE (draining/stopped). On OK the callback
  // will receive events until one with finished = true.
  virtual absl::Status Submit(GenerationRequest request, EventCallback on_event) = 0;

  // Cancels by request id; the final event (kCancelled) follows within one engine step.
  // Unknown or finished ids are ignored.
  virtual void Cancel(const std::string& request_id) = 0;

  // Stops admitting (Submit returns UNAVAILABLE); running and waiting requests go on.
  virtual void StartDraining() = 0;
  // True when nothing is running or waiting.
  virtual bool Idle() const = 0;
  // Cancels everything still in flight and joins the engine thread. Idempotent.
  virtual void Shutdown() = 0;

  virtual EngineStats Stats() const = 0;
  virtual const ModelSummary& Summary() const = 0;
  virtual const Tokenizer& tokenizer() const = 0;

  // Text -> ids with the model's tokenizer; chat messages through its chat template.
  virtual std::vector<int32_t> Tokenize(const std::string& text, bool add_special) const = 0;
  virtual absl::StatusOr<std::vector<int32_t>> TokenizeChat(
      const std::vector<ChatMessage>& messages, bool add_generation_prompt) const = 0;
};

}  // namespace compressd
