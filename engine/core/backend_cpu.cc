// The CPU backend: host memory, synchronous copies, the kernels of kernels/cpu.
#include <cstdlib>
#include <cstring>

#include "engine/core/backend.h"
#include "kernels/gemm.h"

namespace compressd {
namespace {

class CpuBackend : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  DeviceKind kind() const override { return DeviceKind::kCpu; }

  absl::StatusOr<void*> Allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    // 64-byte alignment for AVX-512 loads; aligned_alloc needs a multiple of it.
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (p == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat("cpu: cannot allocate ", bytes, " bytes"));
    }
    return p;
  }
  void Free(void* ptr) override { std::free(ptr); }
  absl::StatusOr<void*> AllocateHost(size_t bytes) override { return Allocate(bytes); }
  void FreeHost(void* ptr) override { std::free(ptr); }

  absl::Status CopyToDevice(void* dst, const void* src, size_t bytes) override {
    return Copy(dst, src, bytes);
  }
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes) override {
    return Copy(dst, src, bytes);
  }
  absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes) override {
    return Copy(dst, src, bytes);
  }
  absl::Status Synchronize() override { return absl::OkStatus(); }

  bool Supports(BackendOp op, const kernels::WeightFormat* format) const override {
    if (op == BackendOp::kGemm) return format != nullptr && kernels::GemmSupports(*format);
    // Device sampling is a CUDA op; on CPU the engine's Sampler does it.
    return op != BackendOp::kSampling;
  }

 private:
  static absl::Status Copy(void* dst, const void* src, size_t bytes) {
    if (bytes != 0) std::memmove(dst, src, bytes);
    return absl::OkStatus();
  }
};

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend() { return std::make_unique<CpuBackend>(); }

}  // namespace compressd
