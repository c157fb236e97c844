#include "server/metrics.h"

#include <algorithm>
#include <exception>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"

namespace compressd::server {

namespace {

prometheus::MetricFamily Single(const char* name, const char* help, prometheus::MetricType type,
                                double value) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(std::move(m));
  return f;
}

// Label values of compressd_requests_total; part of the metrics contract, so spelled here
// rather than borrowed from the engine's display names.
const char* ReasonLabel(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
    case FinishReason::kNone: break;
  }
  return "none";
}

}  // namespace

// Engine gauges and monotonic counters, read at scrape time.
class Metrics::EngineCollector : public prometheus::Collectable {
 public:
  EngineCollector(std::function<EngineStats()> stats_fn, const ModelGauges& model)
      : stats_fn_(std::move(stats_fn)), model_(model) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    using prometheus::MetricType;
    const EngineStats s = stats_fn_ ? stats_fn_() : EngineStats{};
    std::vector<prometheus::MetricFamily> out = {
        Single("compressd_requests_running", "Requests being decoded.", MetricType::Gauge,
               s.running),
        Single("compressd_requests_waiting", "Requests queued for admission.", MetricType::Gauge,
               s.waiting),
        Single("compressd_kv_cache_usage_ratio", "Fraction of KV cache blocks in use.",
               MetricType::Gauge, s.kv_usage_ratio),
        Single("compressd_kv_cache_bytes_per_token", "KV cache bytes per token (all layers).",
               MetricType::Gauge, model_.kv_bytes_per_token),
        Single("compressd_weight_bits_per_param", "Stored weight bits per parameter.",
               MetricType::Gauge, model_.weight_bits_per_param),
        Single("compressd_preemptions_total", "Requests preempted and recomputed.",
               MetricType::Counter, static_cast<double>(s.preemptions_total)),
        Single("compressd_prompt_tokens_total", "Prompt tokens processed.", MetricType::Counter,
               static_cast<double>(s.prompt_tokens_total)),
        Single("compressd_generation_tokens_total", "Tokens generated.", MetricType::Counter,
               static_cast<double>(s.generation_tokens_total)),
        Single("compressd_prefix_cache_hits_total", "Prompt tokens served from the prefix cache.",
               MetricType::Counter, static_cast<double>(s.prefix_cache_hits_total)),
        Single("compressd_kv_demotion_seconds_total",
               "Engine time spent recompressing KV blocks (under memory pressure or for requests "
               "that asked for the smaller codec).",
               MetricType::Counter, s.kv_demotion_seconds_total),
    };
    // KV pressure ladder, step 1 (step 2 is compressd_preemptions_total). Labelled by the codec
    // step and the reason: "pressure" (instead of preempting) or "request" (eagerly, for
    // requests whose kv_cache asked for the smaller codec); present only when the engine's
    // codec can demote.
    if (!s.kv_demotion_from.empty()) {
      prometheus::MetricFamily f;
      f.name = "compressd_kv_blocks_demoted_total";
      f.help =
          "KV block pairs recompressed to a smaller codec, under memory pressure instead of "
          "preempting (reason=\"pressure\") or because the request asked for that codec "
          "(reason=\"request\"); each merges two blocks into one and frees one block.";
      f.type = MetricType::Counter;
      const uint64_t requested = std::min(s.kv_demotions_requested_total, s.kv_demotions_total);
      for (const auto& [reason, count] :
           {std::pair<const char*, uint64_t>{"pressure", s.kv_demotions_total - requested},
            std::pair<const char*, uint64_t>{"request", requested}}) {
        prometheus::ClientMetric m;
        m.label = {{"from", s.kv_demotion_from}, {"to", s.kv_demotion_to}, {"reason", reason}};
        m.counter.value = static_cast<double>(count);
        f.metric.push_back(std::move(m));
      }
      out.push_back(std::move(f));
    }
    return out;
  }

 private:
  std::function<EngineStats()> stats_fn_;
  ModelGauges model_;
};

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(const MetricsOptions& options,
                                                         std::function<EngineStats()> stats_fn,
                                                         const ModelGauges& model) {
  std::unique_ptr<Metrics> m(new Metrics());  // private constructor
  m->registry_ = std::make_shared<prometheus::Registry>();
  m->engine_collector_ = std::make_shared<EngineCollector>(std::move(stats_fn), model);

  using prometheus::Histogram;
  const Histogram::BucketBoundaries latency_buckets = {
      0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25,
      0.5,   0.75,   1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
  const Histogram::BucketBoundaries itl_buckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04,
      0.05,   0.075, 0.1,    0.15,  0.2,  0.3,   0.4,  0.5,   1.0,  2.5};
  const Histogram::BucketBoundaries e2e_buckets = {0.05, 0.1, 0.25, 0.5,  1.0,  2.5,   5.0,
                                                   10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0};
  m->ttft_ = &prometheus::BuildHistogram()
                  .Name("compressd_time_to_first_token_seconds")
                  .Help("Time from arrival to the first generated token.")
                  .Register(*m->registry_)
                  .Add({}, latency_buckets);
  m->itl_ = &prometheus::BuildHistogram()
                 .Name("compressd_inter_token_latency_seconds")
                 .Help("Time between consecutive generated tokens of one request.")
                 .Register(*m->registry_)
                 .Add({}, itl_buckets);
  m->e2e_ = &prometheus::BuildHistogram()
                 .Name("compressd_e2e_request_latency_seconds")
                 .Help("Time from arrival to the final token.")
                 .Register(*m->registry_)
                 .Add({}, e2e_buckets);
  m->queue_ = &prometheus::BuildHistogram()
                   .Name("compressd_request_queue_time_seconds")
                   .Help("Time a request waited before its first engine step.")
                   .Register(*m->registry_)
                   .Add({}, latency_buckets);
  m->requests_total_ = &prometheus::BuildCounter()
                            .Name("compressd_requests_total")
                            .Help("Finished requests by finish reason.")
                            .Register(*m->registry_);
  // Pre-create every label value so that rates exist before the first event of each kind.
  for (FinishReason r : {FinishReason::kStop, FinishReason::kLength, FinishReason::kCancelled,
                         FinishReason::kError}) {
    m->requests_total_->Add({{"finish_reason", ReasonLabel(r)}});
  }

  if (options.port != 0) {
    const std::string addr = absl::StrCat(options.host, ":", options.port);
    try {
      // CivetWeb reports bind failures as exceptions; they stop here.
      m->exposer_ = std::make_unique<prometheus::Exposer>(addr, 2);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", addr, ": ", e.what()));
    }
    m->exposer_->RegisterCollectable(m->registry_);
    m->exposer_->RegisterCollectable(m->engine_collector_);
    const std::vector<int> ports = m->exposer_->GetListeningPorts();
    m->port_ = ports.empty() ? options.port : ports.front();
  }
  return m;
}

Metrics::~Metrics() {
  // Stop serving scrapes before the collectors they reference go away.
  exposer_.reset();
}

void Metrics::ObserveInterTokenLatency(double seconds) { itl_->Observe(seconds); }

void Metrics::ObserveFinished(FinishReason reason, const Usage& usage) {
  requests_total_->Add({{"finish_reason", ReasonLabel(reason)}}).Increment();
  if (usage.completion_tokens > 0) ttft_->Observe(usage.time_to_first_token_s);
  e2e_->Observe(usage.e2e_latency_s);
  queue_->Observe(usage.queue_time_s);
}

std::string Metrics::Serialize() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  std::vector<prometheus::MetricFamily> engine = engine_collector_->Collect();
  families.insert(families.end(), engine.begin(), engine.end());
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace compressd::server
