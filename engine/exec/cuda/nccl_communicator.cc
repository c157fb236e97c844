// NCCL communicators for one process driving several GPUs (ncclCommInitAll). Compiled
// only when the build found NCCL (COMPRESSD_HAVE_NCCL); otherwise communicator.cc
// provides the UNAVAILABLE stub.
#if defined(COMPRESSD_HAVE_NCCL)
#include <cuda_runtime_api.h>
#include <nccl.h>

#include "engine/exec/communicator.h"

namespace compressd {
namespace {

absl::Status NcclStatus(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", ncclGetErrorString(r)));
}

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int device, int rank, int size)
      : comm_(comm), device_(device), rank_(rank), size_(size) {}
  ~NcclCommunicator() override { ncclCommDestroy(comm_); }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void SetStream(cudaStream_t s) { stream_ = s; }

  absl::Status AllReduceSum(float* data, int64_t n) override {
    cudaSetDevice(device_);
    return NcclStatus(ncclAllReduce(data, data, static_cast<size_t>(n), ncclFloat32, ncclSum,
                                    comm_, stream_),
                      "ncclAllReduce");
  }
  absl::Status AllGather(const float* send, int64_t n, float* recv) override {
    cudaSetDevice(device_);
    return NcclStatus(
        ncclAllGather(send, recv, static_cast<size_t>(n), ncclFloat32, comm_, stream_),
        "ncclAllGather");
  }
  absl::Status Barrier() override {
    // A one-element all-reduce is NCCL's barrier; wait for it on the host.
    cudaSetDevice(device_);
    float* one = nullptr;
    if (cudaMallocAsync(reinterpret_cast<void**>(&one), sizeof(float), stream_) != cudaSuccess) {
      return absl::InternalError("Barrier: cudaMallocAsync failed");
    }
    absl::Status s = AllReduceSum(one, 1);
    cudaFreeAsync(one, stream_);
    if (s.ok() && cudaStreamSynchronize(stream_) != cudaSuccess) {
      s = absl::InternalError("Barrier: stream synchronize failed");
    }
    return s;
  }

 private:
  ncclComm_t comm_;
  int device_;
  int rank_, size_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> MakeNcclCommunicators(
    const std::vector<int>& devices) {
  if (devices.empty()) return absl::InvalidArgumentError("no devices for NCCL");
  std::vector<ncclComm_t> comms(devices.size());
  RETURN_IF_ERROR(NcclStatus(
      ncclCommInitAll(comms.data(), static_cast<int>(devices.size()), devices.data()),
      "ncclCommInitAll"));
  std::vector<std::unique_ptr<Communicator>> out;
  for (size_t i = 0; i < devices.size(); ++i) {
    out.push_back(std::make_unique<NcclCommunicator>(comms[i], devices[i], static_cast<int>(i),
                                                     static_cast<int>(devices.size())));
  }
  return out;
}

}  // namespace compressd
#endif  // COMPRESSD_HAVE_NCCL
