// Linear: one linear layer y = x W^T (+ bias) in whatever WeightFormat it was stored or
// compressed to. Owns (or shares) its bytes; the PackedWeight view points into them.
// Immutable after load; Forward may be called from the engine thread only (it uses the
// engine's ThreadPool).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/core/status.h"
#include "engine/core/tensor.h"
#include "engine/core/thread_pool.h"
#include "kernels/weight_format.h"

namespace compressd {

struct Linear {
  kernels::PackedWeight w;
  std::string format_name = "f32";        // human-readable, e.g. "bf16", "int4-g128"
  std::vector<std::shared_ptr<const void>> storage;  // keeps w's buffers alive
  std::vector<float> bias;                // empty = none
  // Formats that need two GEMMs (low-rank U*V): y = (x V^T) U^T. `first` is V.
  std::shared_ptr<const Linear> first;

  int64_t rows() const { return w.rows; }
  int64_t cols() const { return first ? first->cols() : w.cols; }
  // Bytes of weight storage (all buffers), excluding the bias.
  uint64_t bytes() const;
  uint64_t params() const { return static_cast<uint64_t>(rows()) * cols(); }
};

// A dense Linear viewing a checkpoint tensor in place (F32/F16/BF16, zero copy) or
// converting it (GGUF Q8_0/Q4_0 are dequantized to BF16 until their own kernels land).
// `shape` must be [rows][cols].
absl::StatusOr<Linear> MakeDenseLinear(const TensorView& t, DType target = DType::kF32);

// When every weight buffer of `l` (and of its first factor) lies in a live file mapping,
// i.e. the Linear reads a checkpoint in place: the same Linear reading copies of those
// buffers in memory it owns (MmapFile::CopyToOwned), holding no reference to the file; the
// copied ranges' pages are released (MmapFile::ReleasePages). Otherwise `l` unchanged. (Why: LoadOptions::mmap_weights.)
Linear OwnMappedBuffers(const Linear& l);

// The same Linear with its codes in the order this CPU's kernel reads fastest, where that
// differs from the stored order: 4-bit group codes run by the W4A8 kernel take the
// superblock order (kernels/quant.h, kLayoutA8Superblock; ~1/3 fewer vector ops per weight),
// and GGUF Q8_0/Q4_0 blocks are split into codes and scales for the int8/int4 group kernels
// (kernels/ggml_quant.h, kLayoutGgufSplit). Codes the Linear owns are rewritten in place; codes in a file mapping,
// or at `source_bytes` (the checkpoint tensor's bytes, which others may view too, e.g. a tied
// embedding table), are copied. Applied by LoadModel when LoadOptions::cpu_kernel_layouts
// (CPU execution), never for `compress` (checkpoints hold the stored order) or for a GPU,
// whose kernels read the stored order.
Linear UseCpuKernelLayouts(const Linear& l, const void* source_bytes = nullptr);
// y[n][ldy] (columns [0, rows)) = x[n][cols] W^T + bias, over the pool's threads.
void LinearForward(const Linear& l, const float* x, int64_t n, float* y, int64_t ldy,
                   ThreadPool& pool, std::vector<float>* scratch);

// Several linears that read the same input (q/k/v, gate/up) in one parallel dispatch:
// outputs[i] gets n rows of ls[i]->rows() columns (leading dimension = rows()).
void LinearForwardMany(const std::vector<const Linear*>& ls, const float* x, int64_t n,
                       const std::vector<float*>& outputs, ThreadPool& pool);

// Converts any plain tensor (F32/F16/BF16/quant GGUF) to fp32 values.
absl::StatusOr<std::vector<float>> TensorToF32(const TensorView& t);

}  // namespace compressd
