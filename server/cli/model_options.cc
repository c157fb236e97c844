#include "server/cli/model_options.h"

#include <sys/stat.h>

#include "engine/core/logging.h"

namespace compressd::cli {
namespace {
bool Exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}
}  // namespace

void AddEngineOptions(Args& a, EngineOptions* o, std::string* log_level) {
  a.Add("model", &o->model,
        "model: HF directory, .gguf file or random:<shape>; empty = the default model");
  a.Add("weights", &o->weights,
        "weight format: auto (as stored), f32, f16, bf16, or a compression preset/recipe");
  a.AddBytes("weight-memory-budget", &o->weight_memory_budget,
             "fit the linear layers' weights in this many bytes (e.g. 600MB): per-layer formats "
             "from int2 to int8 by least estimated error; leave --weights at auto");
  a.Add("mmap-weights", &o->mmap_weights,
        "read weights kept in their stored format (f32/f16/bf16 as stored, GGUF Q8_0/Q4_0, "
        "checkpoints written by `compressd compress`) "
        "in place from the file's mapping instead of copying them: faster load, pages shared "
        "between processes, but decode measured 20-50% slower");
  a.Add("kv-cache", &o->kv_cache, "KV cache codec: fp32, fp16, bf16 (compressed codecs: see docs)");
  a.Add("device", &o->device, "cpu, or cuda:N (needs a CUDA build and a GPU)");
  a.Add("threads", &o->threads, "CPU threads (0 = all cores)");
  a.Add("context-length", &o->context_length, "context length (0 = the model's, at most 8192)");
  a.AddBytes("kv-cache-memory", &o->kv_cache_memory,
             "KV cache memory budget, e.g. 512MB (auto = room for max-running contexts, <= 1 GiB)");
  a.Add("kv-block-size", &o->kv_block_size, "tokens per KV cache block");
  a.Add("max-batch-tokens", &o->max_batch_tokens, "token budget of one engine step (prefill chunk size)");
  a.Add("max-running", &o->max_running, "sequences decoded together");
  a.Add("kv-pressure-ladder", &o->kv_pressure_ladder,
        "when KV blocks run out, recompress cold blocks (int8 -> int4, int4 -> int2) before "
        "preempting");
  a.Add("kv-pressure-min-bits", &o->kv_pressure_min_bits,
        "lowest precision the KV pressure ladder may use: 2, 4 or 8 (8 = never)");
  a.Add("calibration-file", &o->calibration_file, "text for calibration-based compression");
  int64_t* seed = reinterpret_cast<int64_t*>(&o->random_seed);
  a.Add("seed-weights", seed, "seed of random:<shape> weights");
  a.Add("log-level", log_level, "log level: debug, info, warn, error, off");
}

std::string ResolveModel(const std::string& model) {
  if (!model.empty()) return model;
  for (const char* p : {"models/SmolLM2-135M-Instruct", "../shared/models/kdocs-7m",
                        "../shared/models/stories260K"}) {
    if (Exists(p)) {
      LOG_INFO("no --model given: using {}", p);
      return p;
    }
  }
  LOG_WARN("no --model given and no local model found: using random:smollm2-135m, whose "
           "weights are random and whose text is meaningless (scripts/fetch-model.sh downloads "
           "a real model)");
  return "random:smollm2-135m";
}

}  // namespace compressd::cli
