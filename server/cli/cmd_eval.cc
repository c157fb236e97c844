// compressd eval: perplexity, KL divergence and top-1 agreement against the uncompressed
// model on a text file (see engine/exec/evaluator.h for the method).
#include <cstdio>
#include <unistd.h>

#include "engine/core/logging.h"
#include "engine/exec/evaluator.h"
#include "nlohmann/json.hpp"
#include "server/cli/args.h"
#include "server/cli/commands.h"
#include "server/cli/model_options.h"

namespace compressd::cli {

int RunEval(int argc, char** argv) {
  EvalOptions eo;
  std::string log_level = "warn";
  bool json = false, no_compare = false;
  Args a("eval",
         "Perplexity over chunks of --context tokens (second half of each chunk scored, first "
         "token replaced by BOS, as llama.cpp's perplexity tool does), and mean KL divergence "
         "and top-1 agreement of the next-token distribution against the same checkpoint with "
         "f32 weights and fp32 KV.");
  a.Add("model", &eo.model, "model: HF directory, .gguf file or random:<shape>");
  a.Add("weights", &eo.weights, "weight format or compression preset/recipe to evaluate");
  a.AddBytes("weight-memory-budget", &eo.weight_memory_budget,
             "fit the linear layers' weights in this many bytes (e.g. 600MB): per-layer formats from int2 to int8 by least estimated error; leave --weights at auto");
  a.Add("kv-cache", &eo.kv_cache, "KV cache codec to evaluate");
  a.Add("calibration-file", &eo.calibration_file, "text for calibration-based compression");
  a.Add("text", &eo.text_file, "text file to score (e.g. ../shared/models/kdocs-7m/eval.txt)");
  a.AddBytes("max-bytes", &eo.max_bytes, "use only the first N bytes of --text (e.g. 200KB)");
  a.Add("context", &eo.context, "tokens per chunk");
  a.Add("max-chunks", &eo.max_chunks, "score at most N chunks (0 = all)");
  a.Add("threads", &eo.threads, "CPU threads (0 = all cores)");
  a.Add("kv-block-size", &eo.kv_block_size, "tokens per KV block");
  a.Add("reference-weights", &eo.reference_weights, "weights of the reference model");
  a.Add("reference-kv-cache", &eo.reference_kv_cache, "KV codec of the reference model");
  a.Add("no-reference", &no_compare, "skip the reference model (perplexity only)");
  a.Add("json", &json, "print one JSON object instead of a table");
  a.Add("log-level", &log_level, "log level");
  if (int rc = a.Parse(argc, argv); rc >= 0) return rc;
  InitLogging(log_level);
  eo.model = ResolveModel(eo.model);
  eo.compare = !no_compare;
  if (eo.text_file.empty()) {
    std::fprintf(stderr, "compressd eval: --text FILE is required\n");
    return 2;
  }
  const bool tty = isatty(fileno(stderr));
  eo.progress = [tty](int done, int total) {
    // A live counter on a terminal; every 10% in logs.
    if (tty) {
      std::fprintf(stderr, "\r[eval] chunk %d/%d", done, total);
      if (done == total) std::fputc('\n', stderr);
    } else if (done == total || (done * 10 / total) != ((done - 1) * 10 / total)) {
      std::fprintf(stderr, "[eval] chunk %d/%d\n", done, total);
    }
  };
  auto r = RunEval(eo);
  if (!r.ok()) {
    std::fprintf(stderr, "compressd eval: %s\n", r.status().ToString().c_str());
    return 1;
  }
  if (json) {
    nlohmann::json j;
    j["model"] = eo.model;
    j["weights"] = eo.weight_memory_budget > 0
                       ? "budget:" + std::to_string(eo.weight_memory_budget)
                       : eo.weights;
    j["kv_cache"] = eo.kv_cache;
    j["perplexity"] = r->perplexity;
    j["perplexity_stderr"] = r->perplexity_stderr;
    j["reference_perplexity"] = r->reference_perplexity;
    j["kl_divergence"] = r->kl_divergence;
    j["kl_divergence_p99"] = r->kl_divergence_p99;
    j["top1_agreement"] = r->top1_agreement;
    j["weight_bits_per_param"] = r->weight_bits_per_param;
    j["weight_bytes"] = r->weight_bytes;
    j["kv_bytes_per_token"] = r->kv_bytes_per_token;
    j["reference_kv_bytes_per_token"] = r->reference_kv_bytes_per_token;
    j["tokens_scored"] = r->tokens_scored;
    j["chunks"] = r->chunks;
    j["context"] = eo.context;
    j["seconds"] = r->seconds;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("model              %s\n", eo.model.c_str());
    const std::string w = eo.weight_memory_budget > 0
                              ? "budget:" + std::to_string(eo.weight_memory_budget)
                              : eo.weights;
    std::printf("weights / kv       %s / %s\n", w.c_str(), eo.kv_cache.c_str());
    std::printf("chunks x context   %d x %d (%lld tokens scored)\n", r->chunks, eo.context,
                static_cast<long long>(r->tokens_scored));
    std::printf("perplexity         %.4f +/- %.4f\n", r->perplexity, r->perplexity_stderr);
    if (eo.compare) {
      std::printf("reference ppl      %.4f\n", r->reference_perplexity);
      std::printf("KL divergence      %.6f (p99 %.6f)\n", r->kl_divergence, r->kl_divergence_p99);
      std::printf("top-1 agreement    %.2f%%\n", 100.0 * r->top1_agreement);
    }
    std::printf("weights            %.2f MB, %.3f bits/param\n", r->weight_bytes / 1e6,
                r->weight_bits_per_param);
    std::printf("KV bytes/token     %.1f\n", r->kv_bytes_per_token);
    std::printf("time               %.1f s\n", r->seconds);
  }
  return 0;
}

}  // namespace compressd::cli
