// Backend: where tensors live and ops run. One instance per device, chosen at start-up
// from --device (cpu | cuda | cuda:N) and owned by the engine thread; it is not
// thread-safe. Buffers returned by Allocate() belong to the caller until Free().
// Every device error is an absl::Status; no backend exits or throws.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "engine/core/status.h"
#include "kernels/weight_format.h"

namespace compressd {

enum class DeviceKind : uint8_t { kCpu = 0, kCuda = 1 };

struct DeviceSpec {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;  // cuda:N
};

// The ops a backend may or may not implement for a given weight format.
enum class BackendOp : uint8_t {
  kGemm = 0,         // y = x W^T for a WeightFormat
  kRmsNorm = 1,
  kRope = 2,
  kSwiGlu = 3,
  kResidualAdd = 4,
  kAttention = 5,    // paged attention over dense KV blocks
  kSampling = 6,     // greedy / top-k / top-p on device
  kEmbedding = 7,
};
const char* BackendOpName(BackendOp op);

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;  // "cpu", "cuda:0"
  virtual DeviceKind kind() const = 0;

  // Device memory. Allocate(0) returns nullptr and OK.
  virtual absl::StatusOr<void*> Allocate(size_t bytes) = 0;
  virtual void Free(void* ptr) = 0;
  // Page-locked host memory for fast, asynchronous transfers (plain memory on CPU).
  virtual absl::StatusOr<void*> AllocateHost(size_t bytes) = 0;
  virtual void FreeHost(void* ptr) = 0;

  // Copies are ordered on the backend's stream; call Synchronize() before reading the
  // destination of CopyToHost from the host.
  virtual absl::Status CopyToDevice(void* dst, const void* src, size_t bytes) = 0;
  virtual absl::Status CopyToHost(void* dst, const void* src, size_t bytes) = 0;
  virtual absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes) = 0;
  virtual absl::Status Synchronize() = 0;

  // True when `op` runs on this backend; for kGemm, for weights stored as `format`
  // (ignored by other ops, may be null).
  virtual bool Supports(BackendOp op, const kernels::WeightFormat* format) const = 0;
};

// "cpu", "cuda" (= cuda:0) or "cuda:N"; INVALID_ARGUMENT otherwise.
absl::StatusOr<DeviceSpec> ParseDevice(std::string_view device);

// The backend for --device. INVALID_ARGUMENT for a malformed name; UNAVAILABLE when CUDA
// is not compiled in, no device is present, or N is out of range.
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(std::string_view device);

std::unique_ptr<Backend> MakeCpuBackend();
// Defined in engine/exec/cuda/cuda_backend.cc, only when COMPRESSD_HAVE_CUDA.
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device_index);
// Number of CUDA devices visible (0 without CUDA or without a driver); never fails.
int CudaDeviceCount();

}  // namespace compressd
