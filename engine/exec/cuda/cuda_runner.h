// CudaModelRunner: the CUDA twin of ModelRunner (engine/exec/runner.h) with the same
// BatchEntry interface. Weights are uploaded once (dense -> fp16 for cuBLASLt; quantized
// formats through kernels/cuda_formats.h once the CPU int formats exist); the KV cache
// bytes live in a device arena with the same block ids and layout as the host KvCache
// (whose BlockPool the scheduler keeps using; its host arena is unused). Pure decode
// steps of <= 64 sequences replay a CUDA graph captured per batch-size bucket
// (1,2,4,8,16,32,64); other steps launch kernels directly.
//
// Engine thread only. Errors (CUDA, unsupported formats) are Status; the runner stays
// usable after an error only if the error came before any kernel was enqueued.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/core/status.h"
#include "engine/exec/runner.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/model.h"

namespace compressd {

class CudaModelRunner {
 public:
  virtual ~CudaModelRunner() = default;
  // As ModelRunner::Forward: logits rows in batch order, host memory valid until the next
  // call.
  virtual absl::StatusOr<const float*> Forward(const std::vector<BatchEntry>& batch,
                                               int64_t* n_rows) = 0;
  virtual const Model& model() const = 0;
  virtual int32_t max_context() const = 0;
  virtual std::string device_name() const = 0;
  // Steps served by graph replay vs direct launches (observability, tests).
  virtual int64_t graph_steps() const = 0;
  virtual int64_t eager_steps() const = 0;
  // Linear layers whose format has no fused CUDA kernel and were uploaded dequantized to
  // fp16 (correct, but without the memory saving); 0 for dense and fused formats.
  virtual int64_t fp16_fallback_layers() const = 0;
};

// device: "cuda" or "cuda:N". UNAVAILABLE without CUDA/device; UNIMPLEMENTED when the
// model's formats, KV codec (fp16 only) or head geometry have no CUDA kernel.
absl::StatusOr<std::unique_ptr<CudaModelRunner>> MakeCudaRunner(std::shared_ptr<const Model> model,
                                                                 KvCache* cache,
                                                                 int32_t max_context,
                                                                 const std::string& device);

}  // namespace compressd
