// CudaBackend: one CUDA device, one non-blocking stream that orders every copy and
// kernel, device memory from the stream-ordered allocator (cudaMallocAsync on the
// device's default pool, kept cached between steps), page-locked host buffers. Engine
// thread only. CUDA builds only.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <string>

#include "engine/core/backend.h"

namespace compressd {

class CudaBackend : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(int device_index);
  ~CudaBackend() override;

  std::string name() const override;
  DeviceKind kind() const override { return DeviceKind::kCuda; }
  absl::StatusOr<void*> Allocate(size_t bytes) override;
  void Free(void* ptr) override;
  absl::StatusOr<void*> AllocateHost(size_t bytes) override;
  void FreeHost(void* ptr) override;
  absl::Status CopyToDevice(void* dst, const void* src, size_t bytes) override;
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes) override;
  absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes) override;
  absl::Status Synchronize() override;
  bool Supports(BackendOp op, const kernels::WeightFormat* format) const override;

  int device() const { return device_; }
  int arch() const { return arch_; }  // major * 10 + minor
  int sm_count() const { return sm_count_; }
  cudaStream_t stream() const { return stream_; }
  // Makes this backend's device current on the calling thread.
  absl::Status MakeCurrent() const;
  // Milliseconds between two events recorded on stream() (benchmarks).
  absl::StatusOr<cudaEvent_t> RecordEvent();
  absl::StatusOr<float> ElapsedMs(cudaEvent_t start, cudaEvent_t end);

 private:
  CudaBackend() = default;
  int device_ = 0;
  int arch_ = 0;
  int sm_count_ = 0;
  std::string name_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace compressd
