#include "engine/exec/cuda/cuda_backend.h"

#include <cstdint>

#include "engine/exec/cuda/cuda_status.h"
#include "kernels/cuda_gemm_dense.h"
#include "kernels/cuda_ops.h"

namespace compressd {

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device/driver" error
    return 0;
  }
  return n;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device_index) {
  ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> b, CudaBackend::Create(device_index));
  return std::unique_ptr<Backend>(std::move(b));
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(int device_index) {
  const int count = CudaDeviceCount();
  if (device_index < 0 || device_index >= count) {
    return absl::UnavailableError(absl::StrCat("cuda:", device_index, " is not present (",
                                               count, " CUDA device(s))"));
  }
  std::unique_ptr<CudaBackend> b(new CudaBackend());
  b->device_ = device_index;
  b->name_ = absl::StrCat("cuda:", device_index);
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device_index));
  cudaDeviceProp prop{};
  RETURN_IF_CUDA_ERROR(cudaGetDeviceProperties(&prop, device_index));
  b->arch_ = prop.major * 10 + prop.minor;
  b->sm_count_ = prop.multiProcessorCount;
  if (b->arch_ < 80) {
    return absl::UnavailableError(absl::StrCat(b->name_, " (", prop.name, ") has compute capability ",
                                               prop.major, ".", prop.minor,
                                               "; the CUDA backend needs 8.0 or newer"));
  }
  RETURN_IF_CUDA_ERROR(cudaStreamCreateWithFlags(&b->stream_, cudaStreamNonBlocking));
  // Keep freed memory in the pool: steps allocate and free the same sizes again.
  cudaMemPool_t pool = nullptr;
  RETURN_IF_CUDA_ERROR(cudaDeviceGetDefaultMemPool(&pool, device_index));
  uint64_t threshold = UINT64_MAX;
  RETURN_IF_CUDA_ERROR(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  return b;
}

CudaBackend::~CudaBackend() {
  if (stream_ != nullptr) {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
}

std::string CudaBackend::name() const { return name_; }

absl::Status CudaBackend::MakeCurrent() const {
  return CudaStatus(cudaSetDevice(device_), "cudaSetDevice");
}

absl::StatusOr<void*> CudaBackend::Allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  RETURN_IF_ERROR(MakeCurrent());
  void* p = nullptr;
  RETURN_IF_ERROR(CudaStatus(cudaMallocAsync(&p, bytes, stream_),
                             absl::StrCat("cudaMallocAsync(", bytes, " bytes)").c_str()));
  return p;
}

void CudaBackend::Free(void* ptr) {
  if (ptr != nullptr) cudaFreeAsync(ptr, stream_);
}

absl::StatusOr<void*> CudaBackend::AllocateHost(size_t bytes) {
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  RETURN_IF_CUDA_ERROR(cudaMallocHost(&p, bytes));
  return p;
}

void CudaBackend::FreeHost(void* ptr) {
  if (ptr != nullptr) cudaFreeHost(ptr);
}

absl::Status CudaBackend::CopyToDevice(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return CudaStatus(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_),
                    "cudaMemcpyAsync(host->device)");
}

absl::Status CudaBackend::CopyToHost(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return CudaStatus(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_),
                    "cudaMemcpyAsync(device->host)");
}

absl::Status CudaBackend::CopyOnDevice(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return CudaStatus(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_),
                    "cudaMemcpyAsync(device->device)");
}

absl::Status CudaBackend::Synchronize() {
  return CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

bool CudaBackend::Supports(BackendOp op, const kernels::WeightFormat* f) const {
  if (op != BackendOp::kGemm) return true;
  if (f == nullptr) return false;
  if (f->kind == kernels::WeightKind::kDense) {
    // F32 weights are converted to fp16 on upload.
    return f->dtype == kernels::DType::kF32 || kernels::cuda::DenseGemm::IsSupported(arch_, f->dtype);
  }
  if (f->kind == kernels::WeightKind::kQuant) {
    // rows/cols are checked per layer by QuantGemmSupported at upload.
    return kernels::cuda::QuantGemmSupported(arch_, f->bits, f->group_size, 1, f->group_size);
  }
  return false;
}

absl::StatusOr<cudaEvent_t> CudaBackend::RecordEvent() {
  cudaEvent_t e = nullptr;
  RETURN_IF_CUDA_ERROR(cudaEventCreate(&e));
  RETURN_IF_CUDA_ERROR(cudaEventRecord(e, stream_));
  return e;
}

absl::StatusOr<float> CudaBackend::ElapsedMs(cudaEvent_t start, cudaEvent_t end) {
  RETURN_IF_CUDA_ERROR(cudaEventSynchronize(end));
  float ms = 0.0f;
  RETURN_IF_CUDA_ERROR(cudaEventElapsedTime(&ms, start, end));
  return ms;
}

}  // namespace compressd
