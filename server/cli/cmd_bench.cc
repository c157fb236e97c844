// compressd bench: prefill and decode throughput and peak memory through the real engine
// (the same path serve and generate use). With --concurrency C it runs C streams at once
// and reports aggregate decode tokens/s (continuous batching).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "engine/core/logging.h"
#include "engine/engine.h"
#include "engine/sched/sampler.h"
#include "nlohmann/json.hpp"
#include "server/cli/commands.h"
#include "server/cli/model_options.h"

namespace compressd::cli {
namespace {

uint64_t PeakRssBytes() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_maxrss) * 1024;
}

struct RunResult {
  double prefill_tokens_per_s = 0;
  double decode_tokens_per_s = 0;  // aggregate over streams
  double ttft_s = 0;               // mean
  double wall_s = 0;
  int64_t generated = 0;
};

// Runs `streams` identical-shape requests at once; returns aggregate rates.
absl::StatusOr<RunResult> RunOnce(Engine& engine, int prompt_len, int gen_len, int streams,
                                  uint64_t seed, const SamplingParams& sampling) {
  const int32_t vocab = engine.Summary().vocab_size;
  std::mt19937_64 rng(seed);
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  std::vector<Usage> usages(streams);
  std::vector<double> finish_at(streams);
  absl::Status first_error;
  const auto t0 = std::chrono::steady_clock::now();
  for (int s = 0; s < streams; ++s) {
    GenerationRequest req;
    req.request_id = absl::StrFormat("bench-%d-%d", seed, s);
    for (int i = 0; i < prompt_len; ++i) {
      // Avoid special ids at the low end of the vocabulary.
      req.prompt_tokens.push_back(static_cast<int32_t>(3 + rng() % (vocab - 3)));
    }
    req.max_tokens = gen_len;
    req.ignore_eos = true;
    req.sampling = sampling;
    req.sampling.seed = seed * 1000 + s;
    absl::Status st = engine.Submit(std::move(req), [&, s](GenerationEvent&& ev) {
      if (!ev.finished) return;
      std::lock_guard<std::mutex> lock(mu);
      usages[s] = ev.usage;
      finish_at[s] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (ev.finish_reason == FinishReason::kError && first_error.ok()) first_error = ev.error;
      ++done;
      cv.notify_one();
    });
    if (!st.ok()) return st;
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done == streams; });
  }
  RETURN_IF_ERROR(first_error);
  RunResult r;
  r.wall_s = *std::max_element(finish_at.begin(), finish_at.end());
  double last_first_token = 0, ttft_sum = 0;
  for (const auto& u : usages) {
    last_first_token = std::max(last_first_token, u.time_to_first_token_s);
    ttft_sum += u.time_to_first_token_s;
    r.generated += u.completion_tokens;
  }
  r.ttft_s = ttft_sum / streams;
  // Prefill: all prompts are processed before the last first token.
  r.prefill_tokens_per_s = last_first_token > 0 ? prompt_len * streams / last_first_token : 0;
  // Decode: tokens after each stream's first, over the time after the last first token.
  const double decode_time = r.wall_s - last_first_token;
  r.decode_tokens_per_s =
      decode_time > 0 ? static_cast<double>(r.generated - streams) / decode_time : 0;
  return r;
}

}  // namespace

int RunBench(int argc, char** argv) {
  EngineOptions eo;
  std::string log_level = "warn";
  int32_t prompt_len = 128, gen_len = 128, repeats = 1;
  std::string concurrency_list = "1";
  bool json = false;
  SamplingParams sampling;
  sampling.temperature = 0;
  eo.model = "random:smollm2-135m";
  Args a("bench",
         "Measures prefill and decode tokens/s and peak resident memory through the engine. "
         "Prompts are random token ids; generation is greedy (or sampled with --temperature) "
         "with EOS ignored.");
  AddEngineOptions(a, &eo, &log_level);
  a.Add("prompt-len", &prompt_len, "prompt tokens per request");
  a.Add("gen-len", &gen_len, "tokens generated per request");
  a.Add("concurrency", &concurrency_list,
        "requests run at once (aggregate decode tokens/s); a comma-separated list (e.g. 1,16,64) "
        "measures each level on one loaded engine");
  a.Add("repeats", &repeats, "runs after one warm-up run; the best is reported");
  a.Add("temperature", &sampling.temperature,
        "sampling temperature (0 = greedy); with --top-p/--top-k/--min-p measures the sampler's "
        "share of decode time at high concurrency");
  a.Add("top-p", &sampling.top_p, "nucleus sampling mass (1 = off)");
  a.Add("top-k", &sampling.top_k, "keep the k most likely tokens (0 = off)");
  a.Add("min-p", &sampling.min_p, "drop tokens below min-p x the best token's probability (0 = off)");
  a.Add("json", &json, "print one JSON object (one per line for a list of concurrencies)");
  if (int rc = a.Parse(argc, argv); rc >= 0) return rc;
  InitLogging(log_level);
  std::vector<int32_t> levels;
  for (absl::string_view part : absl::StrSplit(concurrency_list, ',')) {
    int32_t c = 0;
    if (!absl::SimpleAtoi(part, &c) || c < 1) {
      std::fprintf(stderr, "compressd bench: --concurrency wants positive integers, got '%s'\n",
                   concurrency_list.c_str());
      return 2;
    }
    levels.push_back(c);
  }
  if (absl::Status st = ValidateSamplingParams(sampling, 1 << 30); !st.ok()) {
    std::fprintf(stderr, "compressd bench: %s\n", std::string(st.message()).c_str());
    return 2;
  }
  if (prompt_len < 1 || gen_len < 2 || repeats < 1) {
    std::fprintf(stderr, "compressd bench: --prompt-len >= 1, --gen-len >= 2, --repeats >= 1\n");
    return 2;
  }
  const int32_t max_level = *std::max_element(levels.begin(), levels.end());
  eo.max_running = std::max(eo.max_running, max_level);
  eo.max_queue = std::max(eo.max_queue, max_level);
  const auto tl = std::chrono::steady_clock::now();
  auto engine_or = Engine::Create(eo);
  if (!engine_or.ok()) {
    std::fprintf(stderr, "compressd bench: %s\n", engine_or.status().ToString().c_str());
    return 1;
  }
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - tl).count();
  const uint64_t rss_after_load = PeakRssBytes();
  Engine& engine = **engine_or;
  // Warm-up (page in weights, size buffers), then the measured runs.
  auto warm = RunOnce(engine, std::min(prompt_len, 16), 4, 1, 7, sampling);
  if (!warm.ok()) {
    std::fprintf(stderr, "compressd bench: %s\n", warm.status().ToString().c_str());
    return 1;
  }
  std::vector<RunResult> results;
  for (int32_t concurrency : levels) {
    RunResult best;
    for (int i = 0; i < repeats; ++i) {
      auto r = RunOnce(engine, prompt_len, gen_len, concurrency, 100 + i, sampling);
      if (!r.ok()) {
        std::fprintf(stderr, "compressd bench: %s\n", r.status().ToString().c_str());
        return 1;
      }
      if (r->decode_tokens_per_s > best.decode_tokens_per_s) best = *r;
    }
    results.push_back(best);
  }
  const ModelSummary& s = engine.Summary();
  const int threads = eo.threads > 0 ? eo.threads : static_cast<int>(std::thread::hardware_concurrency());
  engine.Shutdown();
  if (json) {
    for (size_t k = 0; k < levels.size(); ++k) {
      const RunResult& best = results[k];
      nlohmann::json j;
      j["model"] = eo.model;
      j["weights"] = eo.weights;
      j["kv_cache"] = eo.kv_cache;
      j["device"] = eo.device;
      j["threads"] = threads;
      j["prompt_len"] = prompt_len;
      j["gen_len"] = gen_len;
      j["concurrency"] = levels[k];
      j["temperature"] = sampling.temperature;
      j["top_p"] = sampling.top_p;
      j["top_k"] = sampling.top_k;
      j["min_p"] = sampling.min_p;
      j["prefill_tokens_per_s"] = best.prefill_tokens_per_s;
      j["decode_tokens_per_s"] = best.decode_tokens_per_s;
      j["mean_ttft_s"] = best.ttft_s;
      j["peak_rss_bytes"] = PeakRssBytes();
      j["rss_after_load_bytes"] = rss_after_load;
      j["load_seconds"] = load_s;
      j["weight_bytes"] = s.weight_bytes;
      j["parameters"] = s.parameters;
      j["kv_bytes_per_token"] = s.kv_bytes_per_token;
      std::printf("%s\n", j.dump().c_str());
    }
  } else {
    std::printf("model            %s (%s, %.1f M params, %.1f MB weights, %s)\n", eo.model.c_str(),
                s.architecture.c_str(), s.parameters / 1e6, s.weight_bytes / 1e6, eo.weights.c_str());
    std::printf("device           %s; threads %d; KV %s %.0f B/token\n", eo.device.c_str(), threads,
                s.kv_codec.c_str(), s.kv_bytes_per_token);
    std::printf("load             %.2f s\n", load_s);
    for (size_t k = 0; k < levels.size(); ++k) {
      const RunResult& best = results[k];
      std::printf("prefill          %.1f tokens/s (%d x %d-token prompts)\n",
                  best.prefill_tokens_per_s, levels[k], prompt_len);
      std::printf("decode           %.1f tokens/s (%d streams x %d tokens)\n",
                  best.decode_tokens_per_s, levels[k], gen_len);
      std::printf("mean TTFT        %.3f s\n", best.ttft_s);
    }
    std::printf("peak RSS         %.1f MB\n", PeakRssBytes() / 1e6);
  }
  return 0;
}

}  // namespace compressd::cli
