// compressd compress: load a checkpoint, compress every linear with --weights (a preset or a
// recipe), and write a compressed checkpoint folder that loads without recompressing
// (engine/compress/checkpoint_io.h): `compressd serve --model OUT_DIR`.
#include <algorithm>
#include <sys/stat.h>

#include <cstdio>
#include <unistd.h>

#include "engine/compress/checkpoint_io.h"
#include "engine/core/logging.h"
#include "engine/model/model_loader.h"
#include "server/cli/args.h"
#include "server/cli/commands.h"
#include "server/cli/model_options.h"

namespace compressd::cli {

int RunCompress(int argc, char** argv) {
  LoadOptions lo;
  std::string out, log_level = "info";
  int64_t seed = static_cast<int64_t>(lo.random_seed);
  Args a("compress",
         "Compress a model's linear layers with a preset or recipe and write a compressed "
         "checkpoint (model.safetensors + compressd.json + config/tokenizer) to --out.");
  a.Add("model", &lo.model, "model: Hugging Face directory (config.json + tokenizer)");
  a.Add("weights", &lo.weights, "compression preset or recipe (e.g. int4, sparse50, 2:4, lowrank-50)");
  int64_t budget = 0;
  a.AddBytes("weight-memory-budget", &budget,
             "fit the linear layers' weights in this many bytes (e.g. 600MB): per-layer formats from int2 to int8 by least estimated error; leave --weights at auto");
  a.Add("calibration-file", &lo.calibration_file, "text for calibration-based compression");
  a.Add("threads", &lo.threads, "CPU threads (0 = all cores)");
  a.Add("seed-weights", &seed, "seed of random:<shape> weights");
  a.Add("out", &out, "output folder (created if missing)");
  a.Add("log-level", &log_level, "log level: debug, info, warn, error, off");
  if (int rc = a.Parse(argc, argv); rc >= 0) return rc;
  InitLogging(log_level);
  lo.random_seed = static_cast<uint64_t>(seed);
  lo.weight_memory_budget = static_cast<uint64_t>(std::max<int64_t>(0, budget));
  lo.model = ResolveModel(lo.model);
  if (out.empty()) {
    std::fprintf(stderr, "compressd compress: --out DIR is required\n");
    return 2;
  }
  // Checked before any work: the checkpoint copies config.json and the tokenizer from the
  // source folder, so random:<shape> and .gguf sources cannot be written (see
  // scripts/random_checkpoint.py for a random-weight Hugging Face folder).
  struct stat st;
  if (::stat(lo.model.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    std::fprintf(stderr,
                 "compressd compress: --model must be a Hugging Face folder (config.json + "
                 "tokenizer); '%s' is not one (for a random-weight folder: "
                 "/usr/bin/python3 scripts/random_checkpoint.py --shape S --out DIR)\n",
                 lo.model.c_str());
    return 2;
  }
  const bool tty = isatty(fileno(stderr));
  lo.progress = [tty](int done, int total) {
    if (tty) {
      std::fprintf(stderr, "\r[compress] linear %d/%d", done, total);
      if (done == total) std::fputc('\n', stderr);
    } else if (done == total || (done * 10 / total) != ((done - 1) * 10 / total)) {
      std::fprintf(stderr, "[compress] linear %d/%d\n", done, total);
    }
  };
  auto m = LoadModel(lo);
  if (!m.ok()) {
    std::fprintf(stderr, "compressd compress: %s\n", m.status().ToString().c_str());
    return 1;
  }
  if (absl::Status s = SaveCompressedCheckpoint(**m, out); !s.ok()) {
    std::fprintf(stderr, "compressd compress: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("%-12s %-24s %12s %10s\n", "group", "format", "params", "MB");
  for (const Model::Group& g : (*m)->Groups()) {
    std::printf("%-12s %-24s %12llu %10.2f\n", g.name.c_str(), g.format.c_str(),
                static_cast<unsigned long long>(g.params), g.bytes / 1e6);
  }
  const double params = static_cast<double>((*m)->Parameters());
  std::printf("total weights %.2f MB (%.3f bits/param), written to %s\n",
              (*m)->WeightBytes() / 1e6, params > 0 ? 8.0 * (*m)->WeightBytes() / params : 0.0,
              out.c_str());
  return 0;
}

}  // namespace compressd::cli
