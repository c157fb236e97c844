// compressd info: architecture, parameter count, bytes and format by tensor group.
#include <algorithm>
#include <cstdio>

#include "absl/strings/str_format.h"
#include "engine/core/logging.h"
#include "engine/model/model_loader.h"
#include "server/cli/commands.h"
#include "server/cli/model_options.h"

namespace compressd::cli {

int RunInfo(int argc, char** argv) {
  EngineOptions eo;
  std::string log_level = "warn";
  bool per_tensor = false;
  Args a("info", "Prints a model's architecture, parameter count, and bytes, format and "
                 "bits/param by tensor group (after compression with --weights).");
  a.Add("model", &eo.model, "model: HF directory, .gguf file or random:<shape>");
  a.Add("weights", &eo.weights, "weight format or compression preset/recipe to apply first");
  a.AddBytes("weight-memory-budget", &eo.weight_memory_budget,
             "fit the linear layers' weights in this many bytes (e.g. 600MB): per-layer formats from int2 to int8 by least estimated error; leave --weights at auto");
  a.Add("calibration-file", &eo.calibration_file, "text for calibration-based compression");
  a.Add("tensors", &per_tensor, "also list every linear layer with its format and bytes");
  a.Add("log-level", &log_level, "log level");
  if (int rc = a.Parse(argc, argv); rc >= 0) return rc;
  InitLogging(log_level);
  LoadOptions lo;
  lo.model = ResolveModel(eo.model);
  lo.weights = eo.weights;
  lo.weight_memory_budget = static_cast<uint64_t>(std::max<int64_t>(0, eo.weight_memory_budget));
  lo.calibration_file = eo.calibration_file;
  auto m = LoadModel(lo);
  if (!m.ok()) {
    std::fprintf(stderr, "compressd info: %s\n", m.status().ToString().c_str());
    return 1;
  }
  const Model& model = **m;
  const ModelConfig& c = model.config;
  std::printf("model:          %s\n", model.id.c_str());
  std::printf("architecture:   %s (model_type %s)\n", c.architecture.c_str(), c.model_type.c_str());
  std::printf("layers:         %d, hidden %d, ffn %d, heads %d, kv heads %d, head dim %d\n",
              c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads,
              c.num_key_value_heads, c.head_dim);
  std::printf("vocab:          %d (tokenizer %d), context %d, rope theta %g%s\n", c.vocab_size,
              model.tokenizer->vocab_size(), c.max_position_embeddings, c.rope_theta,
              c.rope_scaling.type == RopeScalingType::kLlama3   ? " (llama3 scaling)"
              : c.rope_scaling.type == RopeScalingType::kLinear ? " (linear scaling)"
                                                                : "");
  std::printf("embeddings:     %s\n", c.tie_word_embeddings ? "tied" : "untied");
  std::printf("weights:        %s\n", model.weight_recipe.c_str());
  const uint64_t params = model.Parameters(), bytes = model.WeightBytes();
  std::printf("parameters:     %llu (%.2f M)\n", static_cast<unsigned long long>(params), params / 1e6);
  std::printf("bytes:          %llu (%.2f MB, %.2f bits/param)\n\n",
              static_cast<unsigned long long>(bytes), bytes / 1e6,
              params ? 8.0 * bytes / params : 0.0);
  std::printf("%-12s %-14s %14s %14s %10s\n", "group", "format", "params", "bytes", "bits/param");
  for (const auto& g : model.Groups()) {
    std::printf("%-12s %-14s %14llu %14llu %10.2f\n", g.name.c_str(), g.format.c_str(),
                static_cast<unsigned long long>(g.params), static_cast<unsigned long long>(g.bytes),
                g.params ? 8.0 * g.bytes / g.params : 0.0);
  }
  if (per_tensor) {
    std::printf("\n%-48s %-14s %12s %12s %10s\n", "tensor", "format", "params", "bytes", "bits/param");
    auto row = [](const std::string& n, const Linear& l) {
      std::printf("%-48s %-14s %12llu %12llu %10.2f\n", n.c_str(), l.format_name.c_str(),
                  static_cast<unsigned long long>(l.params()),
                  static_cast<unsigned long long>(l.bytes()), 8.0 * l.bytes() / l.params());
    };
    for (size_t i = 0; i < model.weights.layers.size(); ++i) {
      const LayerWeights& L = model.weights.layers[i];
      const std::string p = absl::StrFormat("model.layers.%d.", i);
      row(p + "self_attn.q_proj", L.q);
      row(p + "self_attn.k_proj", L.k);
      row(p + "self_attn.v_proj", L.v);
      row(p + "self_attn.o_proj", L.o);
      row(p + "mlp.gate_proj", L.gate);
      row(p + "mlp.up_proj", L.up);
      row(p + "mlp.down_proj", L.down);
    }
    row("lm_head", model.weights.lm_head);
  }
  return 0;
}

}  // namespace compressd::cli
