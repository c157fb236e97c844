// Helpers for tests that drive the Engine through its public API: a collector of one
// request's events, greedy requests, deterministic prompts, and the default test model.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "tests/util/test_env.h"

namespace compressd::testing {

// Gathers one request's tokens and text; Wait() returns once its final event arrived.
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> tokens;
  std::string text;
  bool done = false;
  GenerationEvent final_event;

  EventCallback Callback() {
    return [this](GenerationEvent&& e) {
      std::lock_guard<std::mutex> lock(mu);
      tokens.insert(tokens.end(), e.token_ids.begin(), e.token_ids.end());
      text += e.text;
      if (e.finished) {
        done = true;
        final_event = std::move(e);
        cv.notify_all();
      }
    };
  }
  bool Wait(double seconds = 60) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return done; });
  }
};

// Greedy, EOS ignored: exactly max_tokens tokens.
inline GenerationRequest Greedy(std::vector<int32_t> prompt, int max_tokens, std::string id) {
  GenerationRequest r;
  r.prompt_tokens = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  r.ignore_eos = true;
  r.request_id = std::move(id);
  return r;
}

// BOS followed by len - 1 pseudo-random ids in [3, vocab), fixed by seed.
inline std::vector<int32_t> Prompt(int seed, int len, int vocab) {
  std::vector<int32_t> p = {1};
  uint32_t s = static_cast<uint32_t>(seed) * 2654435761u + 1;
  for (int i = 1; i < len; ++i) {
    s = s * 1664525u + 1013904223u;
    p.push_back(static_cast<int32_t>(3 + (s >> 8) % (vocab - 3)));
  }
  return p;
}

// stories260K from ../shared when present, else random:tiny.
inline std::string ModelOrRandom() {
  const std::string p = SharedPath("models/stories260K");
  return p.empty() ? "random:tiny" : p;
}

}  // namespace compressd::testing
