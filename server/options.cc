#include "server/options.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "engine/core/byte_size.h"

namespace compressd::server {
namespace {

// One option of `compressd serve`. `set` parses the value into the options; `current`
// renders the default for --help from a default-constructed ServerOptions.
struct OptionSpec {
  const char* name;
  const char* value_name;  // empty for booleans
  const char* help;
  std::function<absl::Status(const std::string&, ServerOptions&)> set;
  std::function<std::string(const ServerOptions&)> current;
};

absl::Status BadValue(const std::string& name, const std::string& value, const char* want) {
  return absl::InvalidArgumentError(
      absl::StrFormat("--%s: '%s' is not %s", name, value, want));
}

template <typename Int>
std::function<absl::Status(const std::string&, ServerOptions&)> IntSetter(
    const char* name, Int ServerOptions::*field, int64_t lo, int64_t hi) {
  return [=](const std::string& v, ServerOptions& o) -> absl::Status {
    int64_t x = 0;
    if (!absl::SimpleAtoi(v, &x)) return BadValue(name, v, "an integer");
    if (x < lo || x > hi) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--%s: %d is outside the allowed range [%d, %d]", name, x, lo, hi));
    }
    o.*field = static_cast<Int>(x);
    return absl::OkStatus();
  };
}

template <typename Int>
std::function<absl::Status(const std::string&, ServerOptions&)> EngineIntSetter(
    const char* name, Int EngineOptions::*field, int64_t lo, int64_t hi) {
  return [=](const std::string& v, ServerOptions& o) -> absl::Status {
    int64_t x = 0;
    if (!absl::SimpleAtoi(v, &x)) return BadValue(name, v, "an integer");
    if (x < lo || x > hi) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--%s: %d is outside the allowed range [%d, %d]", name, x, lo, hi));
    }
    o.engine.*field = static_cast<Int>(x);
    return absl::OkStatus();
  };
}

std::function<absl::Status(const std::string&, ServerOptions&)> StringSetter(
    std::string ServerOptions::*field) {
  return [=](const std::string& v, ServerOptions& o) {
    o.*field = v;
    return absl::OkStatus();
  };
}

std::function<absl::Status(const std::string&, ServerOptions&)> EngineStringSetter(
    std::string EngineOptions::*field) {
  return [=](const std::string& v, ServerOptions& o) {
    o.engine.*field = v;
    return absl::OkStatus();
  };
}

absl::StatusOr<bool> ParseBool(const std::string& name, const std::string& v) {
  const std::string s = absl::AsciiStrToLower(v);
  if (s == "true" || s == "1" || s == "yes" || s == "on") return true;
  if (s == "false" || s == "0" || s == "no" || s == "off") return false;
  return BadValue(name, v, "a boolean (true/false)");
}

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

const std::vector<OptionSpec>& Specs() {
  static const std::vector<OptionSpec> specs{
      // Server.
      {"host", "ADDR", "gRPC listen address", StringSetter(&ServerOptions::host),
       [](const ServerOptions& o) { return o.host; }},
      {"port", "N", "gRPC listen port (0 = pick a free port)",
       IntSetter("port", &ServerOptions::port, 0, 65535),
       [](const ServerOptions& o) { return std::to_string(o.port); }},
      {"metrics-host", "ADDR", "Prometheus /metrics listen address",
       StringSetter(&ServerOptions::metrics_host),
       [](const ServerOptions& o) { return o.metrics_host; }},
      {"metrics-port", "N", "Prometheus /metrics port (0 = no metrics endpoint)",
       IntSetter("metrics-port", &ServerOptions::metrics_port, 0, 65535),
       [](const ServerOptions& o) { return std::to_string(o.metrics_port); }},
      {"drain-timeout", "DURATION",
       "on SIGTERM/SIGINT, how long running requests may finish before they are cancelled "
       "(e.g. 30s, 2m)",
       [](const std::string& v, ServerOptions& o) -> absl::Status {
         auto d = ParseDurationFlag(v);
         if (!d.ok()) return BadValue("drain-timeout", v, "a duration such as 30s");
         o.drain_timeout = *d;
         return absl::OkStatus();
       },
       [](const ServerOptions& o) { return absl::FormatDuration(o.drain_timeout); }},
      {"max-message-size", "BYTES", "largest gRPC message received or sent (e.g. 16MiB)",
       [](const std::string& v, ServerOptions& o) -> absl::Status {
         auto b = ParseByteSize(v);
         if (!b.ok() || *b < 1024 || *b > kInt32Max) {
           return BadValue("max-message-size", v, "a size in [1KiB, 2GiB)");
         }
         o.max_message_bytes = static_cast<int32_t>(*b);
         return absl::OkStatus();
       },
       [](const ServerOptions& o) { return std::to_string(o.max_message_bytes); }},
      {"max-concurrent-streams", "N",
       "calls (HTTP/2 streams) one client connection may have open at once; more wait in "
       "the client, so a server short of CPU buffers at most N calls per connection "
       "(0 = max-running + max-queue + 64)",
       IntSetter("max-concurrent-streams", &ServerOptions::max_concurrent_streams, 0,
                 kInt32Max),
       [](const ServerOptions& o) {
         return o.max_concurrent_streams == 0
                    ? std::string("0, i.e. ") + std::to_string(EffectiveMaxConcurrentStreams(o))
                    : std::to_string(o.max_concurrent_streams);
       }},
      {"tls-cert", "FILE", "PEM server certificate chain; with --tls-key turns TLS on",
       [](const std::string& v, ServerOptions& o) {
         o.tls.cert_file = v;
         return absl::OkStatus();
       },
       [](const ServerOptions& o) { return o.tls.cert_file; }},
      {"tls-key", "FILE", "PEM private key of --tls-cert",
       [](const std::string& v, ServerOptions& o) {
         o.tls.key_file = v;
         return absl::OkStatus();
       },
       [](const ServerOptions& o) { return o.tls.key_file; }},
      {"tls-client-ca", "FILE",
       "PEM CA bundle; when set, clients must present a certificate it signed (mTLS)",
       [](const std::string& v, ServerOptions& o) {
         o.tls.client_ca_file = v;
         return absl::OkStatus();
       },
       [](const ServerOptions& o) { return o.tls.client_ca_file; }},
      {"log-level", "LEVEL", "debug, info, warn, error or off",
       [](const std::string& v, ServerOptions& o) -> absl::Status {
         if (v != "debug" && v != "info" && v != "warn" && v != "error" && v != "off") {
           return BadValue("log-level", v, "one of debug, info, warn, error, off");
         }
         o.log_level = v;
         return absl::OkStatus();
       },
       [](const ServerOptions& o) { return o.log_level; }},
      // Engine.
      {"model", "PATH",
       "model directory (Hugging Face), .gguf file, or random:<shape> (required)",
       EngineStringSetter(&EngineOptions::model),
       [](const ServerOptions& o) { return o.engine.model; }},
      {"weights", "PRESET|FILE", "weight compression preset or recipe file",
       EngineStringSetter(&EngineOptions::weights),
       [](const ServerOptions& o) { return o.engine.weights; }},
      {"weight-memory-budget", "BYTES",
       "fit the linear layers' weights in this many bytes (per-layer formats from int2 to int8 "
       "by least estimated error; 0 = off; leave --weights at auto)",
       [](const std::string& v, ServerOptions& o) -> absl::Status {
         if (v == "0") {
           o.engine.weight_memory_budget = 0;
           return absl::OkStatus();
         }
         auto b = ParseByteSize(v);
         if (!b.ok()) return BadValue("weight-memory-budget", v, "a size such as 600MB");
         o.engine.weight_memory_budget = *b;
         return absl::OkStatus();
       },
       [](const ServerOptions& o) { return std::to_string(o.engine.weight_memory_budget); }},
      {"mmap-weights", "",
       "read weights kept in their stored format (f32/f16/bf16 as stored, GGUF Q8_0/Q4_0, "
       "checkpoints written by `compressd compress`) "
       "in place from the file's mapping instead of copying them into memory the server owns: "
       "faster load and page cache shared between processes, but decode measured 20-50% slower",
       [](const std::string& v, ServerOptions& o) -> absl::Status {
         ASSIGN_OR_RETURN(o.engine.mmap_weights, ParseBool("mmap-weights", v));
         return absl::OkStatus();
       },
       [](const ServerOptions& o) { return std::string(o.engine.mmap_weights ? "true" : "false"); }},
      {"kv-cache", "CODEC",
       "KV cache codec: fp16, bf16, fp32 (dense); int8, int4, int2 (per-channel K, per-token V; "
       "int4:v2 = 2-bit V); gear (quantized + low-rank/outlier residuals, gear:o1%, gear+int4); "
       "mikv (mixed precision by token importance, mikv:h4:l2:f45 = 45% of tokens at 4 bits, the "
       "rest at 2); ems (evict-then-merge, ems+int4:f50); cskv (low-rank channels, "
       "cskv:r24+int4); minicache (adjacent layers merged, minicache+int4). Codecs combine with "
       "'+'; bytes per token and quality of each: docs/QUALITY.md",
       EngineStringSetter(&EngineOptions::kv_cache),
       [](const ServerOptions& o) { return o.engine.kv_cache; }},
      {"calibration-file", "FILE", "calibration text for compression recipes that need it",
       EngineStringSetter(&EngineOptions::calibration_file),
       [](const ServerOptions& o) { return o.engine.calibration_file; }},
      {"device", "DEVICE", "cpu, cuda, cuda:N", EngineStringSetter(&EngineOptions::device),
       [](const ServerOptions& o) { return o.engine.device; }},
      {"tensor-parallel", "N", "GPUs to shard the model over (1 = no sharding)",
       EngineIntSetter("tensor-parallel", &EngineOptions::tensor_parallel, 1, 8),
       [](const ServerOptions& o) { return std::to_string(o.engine.tensor_parallel); }},
      {"threads", "N", "CPU threads (0 = all cores)",
       EngineIntSetter("threads", &EngineOptions::threads, 0, 4096),
       [](const ServerOptions& o) { return std::to_string(o.engine.threads); }},
      {"kv-cache-memory", "BYTES", "KV cache size (0 = enough for max-running x context)",
       [](const std::string& v, ServerOptions& o) -> absl::Status {
         auto b = ParseByteSize(v);
         if (!b.ok()) return BadValue("kv-cache-memory", v, "a size such as 2GiB");
         o.engine.kv_cache_memory = *b;
         return absl::OkStatus();
       },
       [](const ServerOptions& o) { return std::to_string(o.engine.kv_cache_memory); }},
      {"kv-block-size", "N", "tokens per KV cache block",
       EngineIntSetter("kv-block-size", &EngineOptions::kv_block_size, 1, 1024),
       [](const ServerOptions& o) { return std::to_string(o.engine.kv_block_size); }},
      {"max-batch-tokens", "N", "prefill token budget per engine step",
       EngineIntSetter("max-batch-tokens", &EngineOptions::max_batch_tokens, 1, kInt32Max),
       [](const ServerOptions& o) { return std::to_string(o.engine.max_batch_tokens); }},
      {"max-running", "N", "sequences decoded together",
       EngineIntSetter("max-running", &EngineOptions::max_running, 1, 1 << 20),
       [](const ServerOptions& o) { return std::to_string(o.engine.max_running); }},
      {"max-queue", "N", "waiting requests before new ones get RESOURCE_EXHAUSTED",
       EngineIntSetter("max-queue", &EngineOptions::max_queue, 0, 1 << 24),
       [](const ServerOptions& o) { return std::to_string(o.engine.max_queue); }},
      {"prefix-caching", "", "reuse KV blocks of identical prompt prefixes",
       [](const std::string& v, ServerOptions& o) -> absl::Status {
         ASSIGN_OR_RETURN(o.engine.prefix_caching, ParseBool("prefix-caching", v));
         return absl::OkStatus();
       },
       [](const ServerOptions& o) { return std::string(o.engine.prefix_caching ? "true" : "false"); }},
      {"kv-pressure-ladder", "",
       "when KV blocks run out, first recompress cold blocks of running requests to the next "
       "smaller precision (int8 -> int4 or int4 -> int2, two blocks into one, once per block), "
       "then preempt; a request may ask for that smaller codec for itself (GenerateRequest."
       "kv_cache) to have its cold blocks demoted eagerly",
       [](const std::string& v, ServerOptions& o) -> absl::Status {
         ASSIGN_OR_RETURN(o.engine.kv_pressure_ladder, ParseBool("kv-pressure-ladder", v));
         return absl::OkStatus();
       },
       [](const ServerOptions& o) {
         return std::string(o.engine.kv_pressure_ladder ? "true" : "false");
       }},
      {"kv-pressure-min-bits", "N",
       "lowest KV precision the pressure ladder may recompress to: 2, 4 or 8 (8 = never)",
       [](const std::string& v, ServerOptions& o) -> absl::Status {
         int32_t x = 0;
         if (!absl::SimpleAtoi(v, &x) || (x != 2 && x != 4 && x != 8)) {
           return BadValue("kv-pressure-min-bits", v, "2, 4 or 8");
         }
         o.engine.kv_pressure_min_bits = x;
         return absl::OkStatus();
       },
       [](const ServerOptions& o) { return std::to_string(o.engine.kv_pressure_min_bits); }},
      {"context-length", "N", "context length (0 = the model's)",
       EngineIntSetter("context-length", &EngineOptions::context_length, 0, kInt32Max),
       [](const ServerOptions& o) { return std::to_string(o.engine.context_length); }},
      {"seed-weights", "N", "seed for random:<shape> weights",
       [](const std::string& v, ServerOptions& o) -> absl::Status {
         uint64_t x = 0;
         if (!absl::SimpleAtoi(v, &x)) return BadValue("seed-weights", v, "an unsigned integer");
         o.engine.random_seed = x;
         return absl::OkStatus();
       },
       [](const ServerOptions& o) { return std::to_string(o.engine.random_seed); }},
  };
  return specs;
}

const OptionSpec* FindSpec(const std::string& name) {
  for (const OptionSpec& s : Specs()) {
    if (name == s.name) return &s;
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<absl::Duration> ParseDurationFlag(const std::string& text) {
  double seconds = 0;
  if (absl::SimpleAtod(text, &seconds)) {
    if (!(seconds >= 0) || seconds > 1e9) {
      return absl::InvalidArgumentError(absl::StrCat("bad duration '", text, "'"));
    }
    return absl::Seconds(seconds);
  }
  absl::Duration d;
  if (!absl::ParseDuration(text, &d) || d < absl::ZeroDuration() ||
      d == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("bad duration '", text, "'"));
  }
  return d;
}

absl::StatusOr<ParsedServeArgs> ParseServeArgs(int argc, const char* const* argv) {
  ParsedServeArgs out;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h" || arg == "help") {
      out.help = true;
      continue;
    }
    if (!absl::StartsWith(arg, "--") || arg.size() == 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", arg, "' (options start with --)"));
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      has_value = true;
    }
    const OptionSpec* spec = FindSpec(name);
    bool is_bool = spec != nullptr && spec->value_name[0] == '\0';
    if (spec == nullptr && absl::StartsWith(name, "no-")) {
      spec = FindSpec(name.substr(3));
      if (spec != nullptr && spec->value_name[0] == '\0' && !has_value) {
        RETURN_IF_ERROR(spec->set("false", out.options));
        continue;
      }
      spec = nullptr;
    }
    if (spec == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown option --", name, " (see compressd serve --help)"));
    }
    if (!has_value) {
      if (is_bool) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
    }
    RETURN_IF_ERROR(spec->set(value, out.options));
  }
  return out;
}

absl::Status ValidateServerOptions(const ServerOptions& o) {
  if (o.engine.model.empty()) {
    return absl::InvalidArgumentError("--model is required (a model directory, .gguf or random:<shape>)");
  }
  if (o.tls.cert_file.empty() != o.tls.key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key must be given together");
  }
  if (o.tls.mutual() && !o.tls.enabled()) {
    return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
  }
  if (o.host.empty()) return absl::InvalidArgumentError("--host is empty");
  if (o.metrics_port != 0 && o.metrics_host.empty()) {
    return absl::InvalidArgumentError("--metrics-host is empty");
  }
  return absl::OkStatus();
}

int32_t EffectiveMaxConcurrentStreams(const ServerOptions& o) {
  if (o.max_concurrent_streams > 0) return o.max_concurrent_streams;
  const int64_t automatic = int64_t{std::max(o.engine.max_running, 1)} +
                            int64_t{std::max(o.engine.max_queue, 0)} + kStreamHeadroom;
  return static_cast<int32_t>(std::min<int64_t>(automatic, kInt32Max));
}

std::string ServeUsage() {
  const ServerOptions defaults;
  std::string out =
      "Usage: compressd serve --model PATH [options]\n"
      "\n"
      "Serves the compressd.v1.Generation gRPC API (with grpc.health.v1 and server\n"
      "reflection) and Prometheus metrics. SIGTERM/SIGINT drain: health turns NOT_SERVING,\n"
      "new requests get UNAVAILABLE, running requests finish (up to --drain-timeout), then\n"
      "the process exits 0.\n"
      "\n"
      "Options (--name=value or --name value; booleans also --name / --no-name):\n";
  for (const OptionSpec& s : Specs()) {
    std::string left = absl::StrCat("  --", s.name);
    if (s.value_name[0] != '\0') absl::StrAppend(&left, "=", s.value_name);
    const std::string def = s.current(defaults);
    absl::StrAppendFormat(&out, "%-34s %s (default: %s)\n", left, s.help,
                          def.empty() ? "none" : def);
  }
  absl::StrAppend(&out, "  --help                             this text\n");
  return out;
}

}  // namespace compressd::server
