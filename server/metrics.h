// Prometheus metrics of one server. Request-level histograms and counters are recorded as
// events arrive (from the engine thread; prometheus-cpp metrics are thread-safe). Engine
// gauges and counters are read from Engine::Stats() at scrape time by a Collectable, so no
// polling thread exists and a scrape always sees current values.
//
// The exposer (HTTP /metrics) is optional: with port 0 the metrics are still recorded and
// can be read with Serialize() (tests, logs).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "engine/core/status.h"
#include "engine/engine.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace compressd::server {

struct MetricsOptions {
  std::string host = "127.0.0.1";
  int32_t port = 0;  // 0 = no HTTP endpoint
};

// Static facts of the served model that are exported as gauges.
struct ModelGauges {
  double kv_bytes_per_token = 0;
  double weight_bits_per_param = 0;
};

class Metrics {
 public:
  // stats_fn is called on scrape from an exposer thread; it must be thread-safe
  // (Engine::Stats is). Binding failure of the HTTP endpoint is UNAVAILABLE.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(const MetricsOptions& options,
                                                         std::function<EngineStats()> stats_fn,
                                                         const ModelGauges& model);
  ~Metrics();

  // Port the HTTP endpoint listens on; 0 when there is none.
  int port() const { return port_; }

  void ObserveInterTokenLatency(double seconds);
  // Called once per request with its final event.
  void ObserveFinished(FinishReason reason, const Usage& usage);

  // Text exposition format of everything (registry + engine collector).
  std::string Serialize() const;

 private:
  class EngineCollector;
  Metrics() = default;

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<EngineCollector> engine_collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;

  prometheus::Histogram* ttft_ = nullptr;
  prometheus::Histogram* itl_ = nullptr;
  prometheus::Histogram* e2e_ = nullptr;
  prometheus::Histogram* queue_ = nullptr;
  prometheus::Family<prometheus::Counter>* requests_total_ = nullptr;
};

}  // namespace compressd::server
