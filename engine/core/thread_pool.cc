#include "engine/core/thread_pool.h"

#include <algorithm>
#include <chrono>

namespace compressd {

namespace {
// Waiting is a PAUSE loop, not sched_yield: on the shared VM a yield is a hypervisor round
// trip (`pvm_irq_enable` + `sched_yield` were ~7% of a 16-stream decode's samples). A worker
// pauses through its whole spin window (100 us, then it sleeps on the condition variable);
// the engine thread pauses ~1 ms for its worker before it starts yielding (in case that
// worker was descheduled and needs this core). Measured with 1000 / 2000 pauses before
// yielding instead: 16-stream int4 decode 751 vs 795 tok/s (mean of 6 alternating runs each,
// docs/BENCHMARKS.md session 7).
constexpr int kMainPauses = 50000;
}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    // Spin for a short while: decode issues dispatches back to back.
    auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(100);
    while (generation_.load(std::memory_order_acquire) == seen &&
           std::chrono::steady_clock::now() < spin_until) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    (*task_)(index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::RunOnAll(const std::function<void(int)>& fn) {
  if (num_threads_ == 1) {
    fn(0);
    return;
  }
  task_ = &fn;
  pending_.store(num_threads_ - 1, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  cv_.notify_all();
  fn(0);
  // Spin briefly, then yield: on an oversubscribed machine the worker may be descheduled
  // and pure spinning would hold the core it needs.
  for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < kMainPauses) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }
  task_ = nullptr;
}

void ThreadPool::ParallelFor(int64_t n, int64_t align,
                             const std::function<void(int64_t, int64_t)>& fn,
                             int64_t cost_per_unit) {
  if (n <= 0) return;
  align = std::max<int64_t>(1, align);
  const int64_t units = (n + align - 1) / align;
  // Below ~32k multiply-adds per thread the hand-off costs more than it saves.
  constexpr int64_t kMinWorkPerThread = 1 << 15;
  const int64_t total = n * std::max<int64_t>(1, cost_per_unit);
  const int64_t by_work = std::max<int64_t>(1, total / kMinWorkPerThread);
  const int threads =
      static_cast<int>(std::min<int64_t>(std::min<int64_t>(num_threads_, units), by_work));
  if (threads <= 1) {
    fn(0, n);
    return;
  }
  RunOnAll([&](int i) {
    if (i >= threads) return;
    const int64_t b = units * i / threads * align;
    const int64_t e = std::min(n, units * (i + 1) / threads * align);
    if (b < e) fn(b, e);
  });
}

}  // namespace compressd
