// Dense GEMM through cuBLASLt: y[n][N] (fp32) = x[n][K] W^T with W [N][K] row-major in
// fp16 or bf16 (x in the same type), fp32 accumulate. The launcher answers IsSupported()
// per (arch, dtype) and caches one heuristic algorithm per shape. One instance per stream
// owner (engine thread); not thread-safe. Only included by CUDA builds.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "kernels/types.h"

namespace compressd::kernels::cuda {

class DenseGemm {
 public:
  // workspace: device memory of workspace_bytes kept by the caller (32 MiB is plenty).
  static cudaError_t Create(void* workspace, size_t workspace_bytes,
                            std::unique_ptr<DenseGemm>* out);
  ~DenseGemm();

  // cuBLASLt is loaded on first use (dlopen; COMPRESSD_CUBLASLT overrides the library
  // path). Empty when it loaded, else why not; Create() then fails with
  // cudaErrorSharedObjectInitFailed.
  static std::string LoadError();

  // fp16 on sm_70+, bf16 on sm_80+.
  static bool IsSupported(int arch, DType dtype);

  // Returns cudaErrorNotSupported when cuBLASLt has no algorithm or fails (the cuBLAS
  // status is kept in last_cublas_status()).
  cudaError_t Run(DType dtype, const void* w, int64_t rows, int64_t cols, const void* x,
                  int64_t n, float* y, int64_t ldy, bool accumulate, cudaStream_t stream);
  int last_cublas_status() const { return last_status_; }

 private:
  struct Impl;
  explicit DenseGemm(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  int last_status_ = 0;
};

}  // namespace compressd::kernels::cuda
