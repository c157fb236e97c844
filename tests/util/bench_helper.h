// A second benchmark thread that runs one task when told to, for the 2-thread cases of the
// kernel benchmarks (the engine splits a GEMM's rows between its threads the same way).
// Persistent, so an iteration does not pay a thread start; spins with yield while idle, so an
// idle benchmark does not hold a shared core. Header-only (benchmarks do not link test_util).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <utility>

namespace compressd::testing {

class BenchHelper {
 public:
  BenchHelper() : thread_([this] { Loop(); }) {}
  ~BenchHelper() {
    stop_.store(true);
    go_.fetch_add(1);
    thread_.join();
  }
  BenchHelper(const BenchHelper&) = delete;
  BenchHelper& operator=(const BenchHelper&) = delete;

  void Start(std::function<void()> f) {
    task_ = std::move(f);
    done_.store(false, std::memory_order_relaxed);
    go_.fetch_add(1, std::memory_order_release);
  }
  void Wait() {
    while (!done_.load(std::memory_order_acquire)) std::this_thread::yield();
  }

 private:
  void Loop() {
    uint64_t seen = 0;
    for (;;) {
      while (go_.load(std::memory_order_acquire) == seen) std::this_thread::yield();
      ++seen;
      if (stop_.load()) return;
      task_();
      done_.store(true, std::memory_order_release);
    }
  }
  std::function<void()> task_;
  std::atomic<uint64_t> go_{0};
  std::atomic<bool> done_{true};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace compressd::testing
