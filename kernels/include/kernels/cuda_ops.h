// CUDA kernels of the transformer block: launchers on raw device pointers and a stream.
// Every launcher only enqueues work on `stream` (no allocation, no synchronisation, so
// all of them are safe inside CUDA-graph capture) and returns the launch's cudaError_t.
// Activations: the residual stream and GEMM outputs are fp32, GEMM inputs are fp16.
// Only included by CUDA builds (COMPRESSD_HAVE_CUDA).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace compressd::kernels::cuda {

// ---- Group-wise integer weights (layout: kernels/cuda_formats.h) ------------------------
struct QuantWeightView {
  int64_t rows = 0;  // N, output features
  int64_t cols = 0;  // K, input features
  int32_t group_size = 0;
  int32_t bits = 0;                     // 4 or 8
  const void* codes = nullptr;          // device
  const void* scale_offset = nullptr;   // device, half2 [rows][cols/group]
};

// y[n][ldy] (columns [0, rows)) = x[n][K] (fp16, row-major, ld K) W^T, fp32 accumulate;
// accumulate=true adds into y (fuses the residual add). GEMV for n <= 8, mma.sync
// m16n8k16 tensor cores for 8 < n <= 64 (in column tiles of 64 rows beyond that).
cudaError_t QuantGemm(const QuantWeightView& w, const void* x_f16, int64_t n, float* y,
                      int64_t ldy, bool accumulate, cudaStream_t stream);
// The two paths, exposed for parity tests and benchmarks.
cudaError_t QuantGemv(const QuantWeightView& w, const void* x_f16, int64_t n, float* y,
                      int64_t ldy, bool accumulate, cudaStream_t stream);
cudaError_t QuantGemmMma(const QuantWeightView& w, const void* x_f16, int64_t n, float* y,
                         int64_t ldy, bool accumulate, cudaStream_t stream);
// True when (arch = major*10+minor, bits, group, rows, cols) runs on these kernels.
bool QuantGemmSupported(int arch, int bits, int group_size, int64_t rows, int64_t cols);

// ---- Element-wise / row-wise ops ---------------------------------------------------------
// out_f16[r][H] = x[src_row(r)][H] / rms * w; src_row(r) = rows ? rows[r] : r.
cudaError_t RmsNormToHalf(const float* x, const float* w, const int32_t* rows, int64_t n_rows,
                          int64_t hidden, float eps, void* out_f16, cudaStream_t stream);
// Rotate-half RoPE in place on q [T][n_q_heads][hd] and k [T][n_kv_heads][hd] (fp32) at
// positions pos[T], from tables cos/sin [max_pos][hd/2].
cudaError_t RopeRotateHalf(float* q, float* k, const int32_t* pos, int64_t n_tokens,
                           int n_q_heads, int n_kv_heads, int head_dim, const float* cos,
                           const float* sin, cudaStream_t stream);
// out_f16[t][i] = silu(gate[t][i]) * up[t][i]; gate/up rows have leading dimension ld.
cudaError_t SwiGluToHalf(const float* gate, const float* up, int64_t ld, int64_t n_tokens,
                         int64_t width, void* out_f16, cudaStream_t stream);
// y[t][i] += bias[i] for t < n_tokens, i < width; rows of y have leading dimension ld.
cudaError_t AddBias(float* y, int64_t ld, const float* bias, int64_t n_tokens, int64_t width,
                    cudaStream_t stream);
// y[i] += x[i]
cudaError_t ResidualAdd(float* y, const float* x, int64_t n, cudaStream_t stream);
// x[t][H] = embed_f16[tokens[t]][H] as fp32.
cudaError_t EmbeddingGather(const void* embed_f16, const int32_t* tokens, int64_t n_tokens,
                            int64_t hidden, float* x, cudaStream_t stream);
cudaError_t FloatToHalf(const float* x, int64_t n, void* out_f16, cudaStream_t stream);

// ---- Paged KV (fp16 blocks, engine/kv/dense_codec.cc layout) ----------------------------
// Block b's region for `layer` = arena + (b * n_layers + layer) * layer_bytes; K then V,
// each [n_kv_heads][block_size][head_dim] fp16.
struct PagedKv {
  void* arena = nullptr;
  int64_t layer_bytes = 0;
  int n_layers = 0;
  int layer = 0;
  int block_size = 16;
  int n_kv_heads = 0;
  int head_dim = 0;
};

// Stores k, v ([T][n_kv_heads][hd] fp32) at slot_mapping[t] = block * block_size + slot.
cudaError_t StoreKv(const PagedKv& kv, const float* k, const float* v,
                    const int32_t* slot_mapping, int64_t n_tokens, cudaStream_t stream);

// Decode/prefill attention: query token t (q [T][n_heads][hd] fp32) attends to tokens
// [0, n_ctx[t]) of the sequence whose block ids start at block_tables + table_offset[t].
// Work is split over `n_splits` slices of `split_tokens` tokens (fixed at launch so the
// grid is graph-capturable; slices past n_ctx exit early), merged by a second kernel.
// workspace: AttentionWorkspaceBytes(...) bytes. out_f16: [T][n_heads][hd].
struct AttentionParams {
  int n_heads = 0;
  float scale = 1.0f;
  int split_tokens = 256;
  int n_splits = 1;
};
size_t AttentionWorkspaceBytes(int64_t n_tokens, int n_heads, int head_dim, int n_splits);
bool AttentionSupported(int head_dim, int n_heads, int n_kv_heads);
cudaError_t PagedAttention(const PagedKv& kv, const AttentionParams& p, const float* q,
                           const int32_t* block_tables, const int32_t* table_offset,
                           const int32_t* n_ctx, int64_t n_tokens, void* workspace,
                           void* out_f16, cudaStream_t stream);

// ---- Sampling ----------------------------------------------------------------------------
// Per row: temperature <= 0 or top_k == 1 -> greedy (argmax, lowest index on ties);
// otherwise softmax(logits / temperature) restricted to the top_k tokens (0 = all) and to
// the smallest top set whose mass reaches top_p (1 = all), sampled with Philox4x32-10
// keyed by (seed, offset) -> same inputs, same token.
struct SamplingRow {
  float temperature = 1.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
  uint64_t offset = 0;  // e.g. the sequence's step count
};
cudaError_t Sample(const float* logits, int64_t n_rows, int64_t vocab, const SamplingRow* rows,
                   int32_t* tokens, cudaStream_t stream);
// Uniform float in [0, 1) from Philox4x32-10 at (seed, offset): the host twin of the
// device draw, for tests.
float PhiloxUniform(uint64_t seed, uint64_t offset);

}  // namespace compressd::kernels::cuda
