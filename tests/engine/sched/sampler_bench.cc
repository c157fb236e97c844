// Sampler::Sample per token: greedy and filtered sampling (top-p / top-k / min-p) over real
// vocabulary sizes. The engine samples every running sequence each decode step, so at 64
// streams this cost is paid 64 times per step.
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/sched/sampler.h"

namespace compressd {
namespace {

std::vector<float> Logits(int32_t V, bool flat) {
  // Roughly the shape of a trained model's logits: a few strong candidates over a broad tail.
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0.0f, flat ? 0.2f : 2.0f);
  std::vector<float> l(V);
  for (auto& x : l) x = n(rng);
  if (!flat) {
    for (int i = 0; i < 8; ++i) l[(i * 7919) % V] += 12.0f - i;
  }
  return l;
}

void BM_Sample(benchmark::State& state) {
  const int32_t V = static_cast<int32_t>(state.range(0));
  SamplingParams p;
  switch (state.range(1)) {
    case 0: p.temperature = 0; break;                        // greedy
    case 1: p.temperature = 0.7f; p.top_p = 0.9f; break;    // nucleus
    case 2: p.temperature = 0.8f; p.top_k = 40; break;      // top-k
    case 3: p.temperature = 1.0f; p.min_p = 0.05f; break;   // min-p
    case 4: p.temperature = 1.0f; break;                    // plain
    case 5: p.temperature = 1.0f; p.top_k = 50; p.top_p = 0.95f; break;  // common defaults
  }
  Sampler s(p, 7);
  // Flat: what random-weight models give (and a real model at a very uncertain step).
  const std::vector<float> base = Logits(V, state.range(2) != 0);
  std::vector<float> l(V);
  const std::vector<int32_t> context(64, 3);
  const absl::flat_hash_map<int32_t, int32_t> counts;
  for (auto _ : state) {
    l = base;
    benchmark::DoNotOptimize(s.Sample(l.data(), V, context, counts, -1).token);
  }
  static const char* kNames[] = {"greedy",    "top_p0.9", "top_k40",
                                 "min_p0.05", "plain",    "top_k50+top_p0.95"};
  state.SetLabel(std::string(kNames[state.range(1)]) + (state.range(2) ? " flat" : " peaked"));
}
BENCHMARK(BM_Sample)->ArgsProduct({{49152, 128256}, {0, 1, 2, 3, 4, 5}, {0, 1}})
    ->ArgNames({"V", "mode", "flat"});

}  // namespace
}  // namespace compressd
