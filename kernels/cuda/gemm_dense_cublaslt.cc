// Dense GEMM via cuBLASLt. Row-major y[n][N] = x[n][K] W^T is, in cuBLAS's column-major
// terms, Y^T (N x n) = op_T(W as K x N) * X^T (K x n): A = W transposed, B = x, C/D fp32.
#include <cublasLt.h>

#include <map>
#include <tuple>

#include "kernels/cuda_gemm_dense.h"

namespace compressd::kernels::cuda {

struct DenseGemm::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  // (dtype, rows, cols, n, ldy) -> plan
  std::map<std::tuple<int, int64_t, int64_t, int64_t, int64_t>, Plan> plans;

  ~Impl() {
    for (auto& [key, p] : plans) {
      cublasLtMatrixLayoutDestroy(p.a);
      cublasLtMatrixLayoutDestroy(p.b);
      cublasLtMatrixLayoutDestroy(p.c);
      cublasLtMatmulDescDestroy(p.op);
    }
    if (handle) cublasLtDestroy(handle);
  }

  cublasStatus_t GetPlan(DType dtype, int64_t rows, int64_t cols, int64_t n, int64_t ldy,
                         Plan** out) {
    const auto key = std::make_tuple(static_cast<int>(dtype), rows, cols, n, ldy);
    auto it = plans.find(key);
    if (it != plans.end()) {
      *out = &it->second;
      return CUBLAS_STATUS_SUCCESS;
    }
    const cudaDataType_t t = dtype == DType::kBF16 ? CUDA_R_16BF : CUDA_R_16F;
    Plan p;
    cublasStatus_t s = cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    const cublasOperation_t trans = CUBLAS_OP_T, no = CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof(trans));
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &no, sizeof(no));
    if ((s = cublasLtMatrixLayoutCreate(&p.a, t, cols, rows, cols)) != CUBLAS_STATUS_SUCCESS ||
        (s = cublasLtMatrixLayoutCreate(&p.b, t, cols, n, cols)) != CUBLAS_STATUS_SUCCESS ||
        (s = cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, rows, n, ldy)) != CUBLAS_STATUS_SUCCESS) {
      cublasLtMatrixLayoutDestroy(p.a);
      cublasLtMatrixLayoutDestroy(p.b);
      cublasLtMatmulDescDestroy(p.op);
      return s;
    }
    cublasLtMatmulPreference_t pref = nullptr;
    cublasLtMatmulPreferenceCreate(&pref);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                         &workspace_bytes, sizeof(workspace_bytes));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    s = cublasLtMatmulAlgoGetHeuristic(handle, p.op, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s == CUBLAS_STATUS_SUCCESS && found == 0) s = CUBLAS_STATUS_NOT_SUPPORTED;
    if (s != CUBLAS_STATUS_SUCCESS) {
      cublasLtMatrixLayoutDestroy(p.a);
      cublasLtMatrixLayoutDestroy(p.b);
      cublasLtMatrixLayoutDestroy(p.c);
      cublasLtMatmulDescDestroy(p.op);
      return s;
    }
    p.algo = result.algo;
    auto [pos, inserted] = plans.emplace(key, p);
    *out = &pos->second;
    return CUBLAS_STATUS_SUCCESS;
  }
};

DenseGemm::DenseGemm(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DenseGemm::~DenseGemm() = default;

cudaError_t DenseGemm::Create(void* workspace, size_t workspace_bytes,
                              std::unique_ptr<DenseGemm>* out) {
  auto impl = std::make_unique<Impl>();
  if (cublasLtCreate(&impl->handle) != CUBLAS_STATUS_SUCCESS) return cudaErrorNotSupported;
  impl->workspace = workspace;
  impl->workspace_bytes = workspace ? workspace_bytes : 0;
  out->reset(new DenseGemm(std::move(impl)));
  return cudaSuccess;
}

bool DenseGemm::IsSupported(int arch, DType dtype) {
  if (dtype == DType::kF16) return arch >= 70;
  if (dtype == DType::kBF16) return arch >= 80;
  return false;
}

cudaError_t DenseGemm::Run(DType dtype, const void* w, int64_t rows, int64_t cols, const void* x,
                           int64_t n, float* y, int64_t ldy, bool accumulate,
                           cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (dtype != DType::kF16 && dtype != DType::kBF16) return cudaErrorInvalidValue;
  Impl::Plan* p = nullptr;
  cublasStatus_t s = impl_->GetPlan(dtype, rows, cols, n, ldy, &p);
  if (s == CUBLAS_STATUS_SUCCESS) {
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    s = cublasLtMatmul(impl_->handle, p->op, &alpha, w, p->a, x, p->b, &beta, y, p->c, y, p->c,
                       &p->algo, impl_->workspace, impl_->workspace_bytes, stream);
  }
  last_status_ = static_cast<int>(s);
  return s == CUBLAS_STATUS_SUCCESS ? cudaSuccess : cudaErrorNotSupported;
}

}  // namespace compressd::kernels::cuda
