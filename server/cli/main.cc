// compressd: one binary, one subcommand per job.
#include <cstdio>
#include <cstring>
#include <string>

#include "engine/core/logging.h"
#include "server/cli/commands.h"

namespace {

constexpr char kUsage[] =
    "compressd: an LLM inference server that serves models compressed.\n\n"
    "Usage: compressd <command> [options]   (compressd <command> --help for its options)\n\n"
    "Commands:\n"
    "  serve     run the gRPC server (compressd.v1.Generation) with Prometheus metrics\n"
    "  generate  generate text from a prompt on this machine, streamed to stdout\n"
    "  info      print a model's architecture, parameters and bytes by tensor group\n"
    "  bench     measure prefill/decode tokens/s and peak memory\n"
    "  eval      perplexity, KL divergence and top-1 agreement on a text file\n"
    "  compress  write a compressed checkpoint that loads without recompressing\n\n"
    "Models: a Hugging Face directory (config.json, *.safetensors, tokenizer.json), a .gguf\n"
    "file, or random:<shape> (tiny, tiny-8k, smollm2-135m, llama-3.2-1b, llama-3.1-8b, qwen2-0.5b)\n"
    "for random weights of a real shape.\n";

}  // namespace

int main(int argc, char** argv) {
  compressd::InitLogging("info");
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  using namespace compressd::cli;
  if (cmd == "serve") return RunServe(argc - 1, argv + 1);
  if (cmd == "generate") return RunGenerate(argc - 1, argv + 1);
  if (cmd == "info") return RunInfo(argc - 1, argv + 1);
  if (cmd == "bench") return RunBench(argc - 1, argv + 1);
  if (cmd == "eval") return RunEval(argc - 1, argv + 1);
  if (cmd == "compress") return RunCompress(argc - 1, argv + 1);
  std::fprintf(stderr, "compressd: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
  return 2;
}
