// Communicator: collective operations among the ranks of one tensor-parallel group.
// Each rank owns one Communicator and calls it from its own thread; every rank must make
// the same sequence of calls (a collective returns once all ranks joined it). Buffers are
// in the memory of the rank's backend (host for the local group, device for NCCL).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/core/status.h"

namespace compressd {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // data[0..n) = sum over ranks of data[0..n), in place. Every rank gets bit-identical
  // results (ranks are summed in rank order).
  virtual absl::Status AllReduceSum(float* data, int64_t n) = 0;
  // recv[r * n .. (r+1) * n) = send of rank r; recv holds size() * n floats.
  virtual absl::Status AllGather(const float* send, int64_t n, float* recv) = 0;
  virtual absl::Status Barrier() = 0;
};

// An in-process group of `size` ranks sharing host memory: element r is rank r's
// communicator, to be used by one thread per rank. The group state is shared by all of
// them and lives until the last one is destroyed.
std::vector<std::unique_ptr<Communicator>> MakeLocalCommunicators(int size);

// One NCCL communicator per CUDA device in `devices` (rank i on devices[i]), for one
// process driving all of them; collectives are enqueued on the stream passed to each
// rank's SetStream (default stream otherwise) and do not synchronise it. UNAVAILABLE
// when the build has no NCCL (COMPRESSD_HAVE_NCCL).
absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> MakeNcclCommunicators(
    const std::vector<int>& devices);

}  // namespace compressd
