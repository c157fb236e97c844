#include "engine/exec/communicator.h"

#include <cstring>

#include "absl/synchronization/mutex.h"

namespace compressd {
namespace {

// Shared state of a local group: published pointers and a reusable generation barrier.
struct LocalGroup {
  explicit LocalGroup(int n) : size(n), ptrs(n, nullptr) {}
  const int size;
  absl::Mutex mu;
  int arrived = 0;
  uint64_t generation = 0;
  std::vector<const float*> ptrs;

  void Wait() {
    absl::MutexLock lock(&mu);
    const uint64_t gen = generation;
    if (++arrived == size) {
      arrived = 0;
      ++generation;
      return;
    }
    auto passed = [&] { return generation != gen; };
    mu.Await(absl::Condition(&passed));
  }
};

class LocalCommunicator : public Communicator {
 public:
  LocalCommunicator(std::shared_ptr<LocalGroup> group, int rank)
      : group_(std::move(group)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return group_->size; }

  absl::Status AllReduceSum(float* data, int64_t n) override {
    if (n < 0) return absl::InvalidArgumentError("AllReduceSum: negative count");
    Publish(data);
    // Every rank sums everyone's buffer in rank order into its own scratch, then all
    // ranks have read all buffers before anyone overwrites its own.
    tmp_.assign(static_cast<size_t>(n), 0.0f);
    for (int r = 0; r < group_->size; ++r) {
      const float* src = group_->ptrs[r];
      for (int64_t i = 0; i < n; ++i) tmp_[i] += src[i];
    }
    group_->Wait();
    if (n > 0) std::memcpy(data, tmp_.data(), static_cast<size_t>(n) * sizeof(float));
    group_->Wait();
    return absl::OkStatus();
  }

  absl::Status AllGather(const float* send, int64_t n, float* recv) override {
    if (n < 0) return absl::InvalidArgumentError("AllGather: negative count");
    Publish(send);
    for (int r = 0; r < group_->size; ++r) {
      if (n > 0) {
        std::memcpy(recv + static_cast<int64_t>(r) * n, group_->ptrs[r],
                    static_cast<size_t>(n) * sizeof(float));
      }
    }
    group_->Wait();  // senders' buffers stay valid until everyone copied them
    return absl::OkStatus();
  }

  absl::Status Barrier() override {
    group_->Wait();
    return absl::OkStatus();
  }

 private:
  void Publish(const float* p) {
    {
      absl::MutexLock lock(&group_->mu);
      group_->ptrs[rank_] = p;
    }
    group_->Wait();
  }

  std::shared_ptr<LocalGroup> group_;
  const int rank_;
  std::vector<float> tmp_;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> MakeLocalCommunicators(int size) {
  auto group = std::make_shared<LocalGroup>(size);
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < size; ++r) out.push_back(std::make_unique<LocalCommunicator>(group, r));
  return out;
}

#if !defined(COMPRESSD_HAVE_NCCL)
absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> MakeNcclCommunicators(
    const std::vector<int>&) {
  return absl::UnavailableError("this build has no NCCL (tensor parallelism across GPUs)");
}
#endif

}  // namespace compressd
