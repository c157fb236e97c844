// cudaError_t -> absl::Status, the one place CUDA errors are translated (CUDA builds only).
#pragma once

#include <cuda_runtime_api.h>

#include "engine/core/status.h"

namespace compressd {

inline absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  const absl::StatusCode code = e == cudaErrorMemoryAllocation ? absl::StatusCode::kResourceExhausted
                                : (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver)
                                    ? absl::StatusCode::kUnavailable
                                    : absl::StatusCode::kInternal;
  return absl::Status(code, absl::StrCat(what, ": ", cudaGetErrorName(e), " (",
                                         cudaGetErrorString(e), ")"));
}

}  // namespace compressd

#define RETURN_IF_CUDA_ERROR(expr) RETURN_IF_ERROR(::compressd::CudaStatus((expr), #expr))
