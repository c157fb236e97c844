// Fixed pool of worker threads for data-parallel loops on the engine thread's hot path.
// ParallelFor is called by one thread at a time (the engine thread); workers spin briefly
// before sleeping so that the ~200 dispatches per decoded token stay cheap.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace compressd {

class ThreadPool {
 public:
  // num_threads counts the calling thread: 1 means no workers.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Runs fn(begin, end) over [0, n) split into contiguous chunks, aligned to `align`,
  // one chunk per thread; returns when all chunks are done.
  // cost_per_unit (roughly multiply-adds per unit) keeps small loops on the calling
  // thread: waking a worker costs microseconds, more than a tiny loop.
  void ParallelFor(int64_t n, int64_t align, const std::function<void(int64_t, int64_t)>& fn,
                   int64_t cost_per_unit = 1 << 20);

  // Runs fn(thread_index) once on each of the num_threads threads.
  void RunOnAll(const std::function<void(int)>& fn);

 private:
  void WorkerLoop(int index);

  int num_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* task_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace compressd
