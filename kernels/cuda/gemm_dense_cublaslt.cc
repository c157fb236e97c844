// Dense GEMM via cuBLASLt. Row-major y[n][N] = x[n][K] W^T is, in cuBLAS's column-major
// terms, Y^T (N x n) = op_T(W as K x N) * X^T (K x n): A = W transposed, B = x, C/D fp32.
//
// cuBLASLt is loaded with dlopen on first use, never linked: libcublasLt.so.13 carries
// ~92 KiB of static TLS, and a library loaded at start-up adds its TLS to every thread's
// stack, so threads created with small explicit stacks (civetweb's, behind the Prometheus
// exposer) failed to start. A dlopen'ed library's TLS is allocated on demand instead.
#include <cublasLt.h>
#include <dlfcn.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "kernels/cuda_gemm_dense.h"

namespace compressd::kernels::cuda {
namespace {

// The cuBLASLt entry points this file uses, resolved from the shared library.
struct LtApi {
  decltype(&cublasLtCreate) Create = nullptr;
  decltype(&cublasLtDestroy) Destroy = nullptr;
  decltype(&cublasLtMatmulDescCreate) MatmulDescCreate = nullptr;
  decltype(&cublasLtMatmulDescDestroy) MatmulDescDestroy = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) MatmulDescSetAttribute = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) MatrixLayoutCreate = nullptr;
  decltype(&cublasLtMatrixLayoutDestroy) MatrixLayoutDestroy = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) MatmulPreferenceCreate = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) MatmulPreferenceDestroy = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) MatmulPreferenceSetAttribute = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) MatmulAlgoGetHeuristic = nullptr;
  decltype(&cublasLtMatmul) Matmul = nullptr;
  std::string error;  // why loading failed; empty when every symbol resolved
};

template <typename F>
bool Resolve(void* lib, const char* name, F* fn, std::string* error) {
  *fn = reinterpret_cast<F>(dlsym(lib, name));
  if (*fn == nullptr && error->empty()) *error = std::string("cuBLASLt lacks symbol ") + name;
  return *fn != nullptr;
}

const LtApi& Lt() {
  static LtApi api;
  static std::once_flag once;
  std::call_once(once, [] {
    // COMPRESSD_CUBLASLT names the library explicitly; else the soname of the toolkit we
    // were built with, then the unversioned name.
    const char* env = std::getenv("COMPRESSD_CUBLASLT");
    const std::string major = std::to_string(CUBLAS_VER_MAJOR);
    const std::string candidates[] = {env ? env : "", "libcublasLt.so." + major, "libcublasLt.so"};
    void* lib = nullptr;
    std::string tried;
    for (const std::string& c : candidates) {
      if (c.empty()) continue;
      lib = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (lib) break;
      const char* e = dlerror();
      tried += (tried.empty() ? "" : "; ") + std::string(e ? e : c);
    }
    if (!lib) {
      api.error = "cannot load cuBLASLt (" + tried + ")";
      return;
    }
    std::string& err = api.error;
    Resolve(lib, "cublasLtCreate", &api.Create, &err);
    Resolve(lib, "cublasLtDestroy", &api.Destroy, &err);
    Resolve(lib, "cublasLtMatmulDescCreate", &api.MatmulDescCreate, &err);
    Resolve(lib, "cublasLtMatmulDescDestroy", &api.MatmulDescDestroy, &err);
    Resolve(lib, "cublasLtMatmulDescSetAttribute", &api.MatmulDescSetAttribute, &err);
    Resolve(lib, "cublasLtMatrixLayoutCreate", &api.MatrixLayoutCreate, &err);
    Resolve(lib, "cublasLtMatrixLayoutDestroy", &api.MatrixLayoutDestroy, &err);
    Resolve(lib, "cublasLtMatmulPreferenceCreate", &api.MatmulPreferenceCreate, &err);
    Resolve(lib, "cublasLtMatmulPreferenceDestroy", &api.MatmulPreferenceDestroy, &err);
    Resolve(lib, "cublasLtMatmulPreferenceSetAttribute", &api.MatmulPreferenceSetAttribute, &err);
    Resolve(lib, "cublasLtMatmulAlgoGetHeuristic", &api.MatmulAlgoGetHeuristic, &err);
    Resolve(lib, "cublasLtMatmul", &api.Matmul, &err);
  });
  return api;
}

}  // namespace

std::string DenseGemm::LoadError() { return Lt().error; }

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
      Lt().MatrixLayoutDestroy(p.a);
      Lt().MatrixLayoutDestroy(p.b);
      Lt().MatrixLayoutDestroy(p.c);
      Lt().MatmulDescDestroy(p.op);
    }
    if (handle) Lt().Destroy(handle);
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
    cublasStatus_t s = Lt().MatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    const cublasOperation_t trans = CUBLAS_OP_T, no = CUBLAS_OP_N;
    Lt().MatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof(trans));
    Lt().MatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &no, sizeof(no));
    if ((s = Lt().MatrixLayoutCreate(&p.a, t, cols, rows, cols)) != CUBLAS_STATUS_SUCCESS ||
        (s = Lt().MatrixLayoutCreate(&p.b, t, cols, n, cols)) != CUBLAS_STATUS_SUCCESS ||
        (s = Lt().MatrixLayoutCreate(&p.c, CUDA_R_32F, rows, n, ldy)) != CUBLAS_STATUS_SUCCESS) {
      Lt().MatrixLayoutDestroy(p.a);
      Lt().MatrixLayoutDestroy(p.b);
      Lt().MatmulDescDestroy(p.op);
      return s;
    }
    cublasLtMatmulPreference_t pref = nullptr;
    Lt().MatmulPreferenceCreate(&pref);
    Lt().MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                         &workspace_bytes, sizeof(workspace_bytes));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    s = Lt().MatmulAlgoGetHeuristic(handle, p.op, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
    Lt().MatmulPreferenceDestroy(pref);
    if (s == CUBLAS_STATUS_SUCCESS && found == 0) s = CUBLAS_STATUS_NOT_SUPPORTED;
    if (s != CUBLAS_STATUS_SUCCESS) {
      Lt().MatrixLayoutDestroy(p.a);
      Lt().MatrixLayoutDestroy(p.b);
      Lt().MatrixLayoutDestroy(p.c);
      Lt().MatmulDescDestroy(p.op);
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
  if (!Lt().error.empty()) return cudaErrorSharedObjectInitFailed;
  auto impl = std::make_unique<Impl>();
  if (Lt().Create(&impl->handle) != CUBLAS_STATUS_SUCCESS) return cudaErrorNotSupported;
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
    s = Lt().Matmul(impl_->handle, p->op, &alpha, w, p->a, x, p->b, &beta, y, p->c, y, p->c,
                       &p->algo, impl_->workspace, impl_->workspace_bytes, stream);
  }
  last_status_ = static_cast<int>(s);
  return s == CUBLAS_STATUS_SUCCESS ? cudaSuccess : cudaErrorNotSupported;
}

}  // namespace compressd::kernels::cuda
