// Options shared by every subcommand that loads a model, and the default-model rule:
// ./models/SmolLM2-135M-Instruct (scripts/fetch-model.sh) if present, else the first of
// ../shared/models/kdocs-7m, ../shared/models/stories260K that exists, else
// random:smollm2-135m with a warning that its text is meaningless.
#pragma once

#include <string>

#include "engine/engine.h"
#include "server/cli/args.h"

namespace compressd::cli {

// Declares --model, --weights, --kv-cache, --threads, --context-length, --kv-cache-memory,
// --kv-block-size, --max-batch-tokens, --max-running, --calibration-file, --seed-weights,
// --log-level on `args`, bound to `opts` / `log_level`.
void AddEngineOptions(Args& args, EngineOptions* opts, std::string* log_level);

// Resolves an empty --model to the default model; logs which one was picked.
std::string ResolveModel(const std::string& model);

}  // namespace compressd::cli
