#include "engine/core/backend.h"

#include <charconv>

namespace compressd {

const char* BackendOpName(BackendOp op) {
  switch (op) {
    case BackendOp::kGemm: return "gemm";
    case BackendOp::kRmsNorm: return "rms_norm";
    case BackendOp::kRope: return "rope";
    case BackendOp::kSwiGlu: return "swiglu";
    case BackendOp::kResidualAdd: return "residual_add";
    case BackendOp::kAttention: return "attention";
    case BackendOp::kSampling: return "sampling";
    case BackendOp::kEmbedding: return "embedding";
  }
  return "unknown";
}

absl::StatusOr<DeviceSpec> ParseDevice(std::string_view device) {
  DeviceSpec spec;
  if (device == "cpu") return spec;
  if (device == "cuda") {
    spec.kind = DeviceKind::kCuda;
    return spec;
  }
  constexpr std::string_view kPrefix = "cuda:";
  if (device.substr(0, kPrefix.size()) == kPrefix && device.size() > kPrefix.size()) {
    std::string_view num = device.substr(kPrefix.size());
    int index = -1;
    auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), index);
    if (ec == std::errc() && end == num.data() + num.size() && index >= 0) {
      spec.kind = DeviceKind::kCuda;
      spec.index = index;
      return spec;
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--device '", std::string(device), "' is not one of cpu, cuda, cuda:N"));
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(std::string_view device) {
  ASSIGN_OR_RETURN(DeviceSpec spec, ParseDevice(device));
  if (spec.kind == DeviceKind::kCpu) return MakeCpuBackend();
#if defined(COMPRESSD_HAVE_CUDA)
  const int count = CudaDeviceCount();
  if (count == 0) {
    return absl::UnavailableError(
        absl::StrCat("--device ", std::string(device), ": no CUDA device is present (or no driver)"));
  }
  if (spec.index >= count) {
    return absl::UnavailableError(absl::StrCat("--device ", std::string(device), ": only ", count,
                                               " CUDA device(s) present"));
  }
  return MakeCudaBackend(spec.index);
#else
  return absl::UnavailableError(absl::StrCat(
      "--device ", std::string(device), ": this build has no CUDA backend (rebuild with COMPRESSD_CUDA=ON)"));
#endif
}

#if !defined(COMPRESSD_HAVE_CUDA)
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int) {
  return absl::UnavailableError("this build has no CUDA backend");
}
int CudaDeviceCount() { return 0; }
#endif

}  // namespace compressd
