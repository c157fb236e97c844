// ThreadPool: ParallelFor splits [0, n) into one aligned chunk per thread; every index runs
// exactly once, small loops stay on the calling thread, and RunOnAll reaches every thread.
#include "engine/core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace compressd {
namespace {

TEST(ThreadPool, EveryIndexOnceInAlignedChunks) {
  for (int threads : {1, 2, 3, 4}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 7, 100, 4097, 100000}) {
      for (int64_t align : {1, 4, 16}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<int> bad_bounds{0}, calls{0};
        pool.ParallelFor(n, align, [&](int64_t b, int64_t e) {
          calls.fetch_add(1);
          if (b % align != 0 || (e != n && e % align != 0) || b >= e || e > n) bad_bounds++;
          for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
        }, /*cost_per_unit=*/1 << 20);
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1)
              << "threads " << threads << " n " << n << " align " << align << " index " << i;
        }
        EXPECT_EQ(bad_bounds.load(), 0) << "threads " << threads << " n " << n;
        EXPECT_LE(calls.load(), threads);
      }
    }
  }
}

TEST(ThreadPool, SmallLoopsRunInlineOnTheCaller) {
  ThreadPool pool(2);
  const auto me = std::this_thread::get_id();
  int calls = 0;
  bool on_caller = true;
  pool.ParallelFor(1000, 1, [&](int64_t b, int64_t e) {
    ++calls;  // inline: no data race
    on_caller = on_caller && std::this_thread::get_id() == me && b == 0 && e == 1000;
  }, /*cost_per_unit=*/4);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(on_caller);
}

TEST(ThreadPool, LargeLoopsUseTheWorkersAndRunOnAllReachesEveryThread) {
  ThreadPool pool(3);
  std::mutex mu;
  std::set<std::thread::id> ids;
  std::vector<int> seen(3, 0);
  pool.RunOnAll([&](int i) {
    std::lock_guard<std::mutex> lock(mu);
    ids.insert(std::this_thread::get_id());
    seen[static_cast<size_t>(i)]++;
  });
  EXPECT_EQ(ids.size(), 3u);
  EXPECT_EQ(seen, std::vector<int>({1, 1, 1}));
  // Many back-to-back dispatches (as decode issues them) complete and stay exact.
  std::atomic<int64_t> sum{0};
  for (int rep = 0; rep < 2000; ++rep) {
    pool.ParallelFor(257, 1, [&](int64_t b, int64_t e) {
      int64_t s = 0;
      for (int64_t i = b; i < e; ++i) s += i;
      sum.fetch_add(s);
    }, 1 << 20);
  }
  EXPECT_EQ(sum.load(), int64_t{2000} * (256 * 257 / 2));
}

}  // namespace
}  // namespace compressd
