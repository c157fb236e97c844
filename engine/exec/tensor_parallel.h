// Tensor parallelism (Megatron style) for the decoder layer: q/k/v/gate/up are split by
// output rows (column-parallel; attention heads stay whole on one rank), o/down by input
// columns (row-parallel) followed by an all-reduce of the partial sums. Norm weights are
// replicated. When there are fewer KV heads than ranks, each KV head is replicated on
// size / n_kv_heads consecutive ranks (GQA groups stay intact).
//
// Shards copy the dense weights they keep (F32/F16/BF16 only for now; quantized formats
// need their own slicing and get UNIMPLEMENTED). Forward functions run on the calling
// thread: one thread per rank, each with its own Communicator.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/compress/linear.h"
#include "engine/core/thread_pool.h"
#include "engine/exec/communicator.h"
#include "engine/model/config.h"
#include "engine/model/model.h"

namespace compressd {

// Rows [row_begin, row_end) / columns [col_begin, col_end) of a dense Linear (bias rows
// follow the rows; a column slice keeps the bias only when keep_bias).
absl::StatusOr<Linear> SliceLinearRows(const Linear& l, int64_t row_begin, int64_t row_end);
absl::StatusOr<Linear> SliceLinearCols(const Linear& l, int64_t col_begin, int64_t col_end,
                                       bool keep_bias);

// Even split in units of `unit` rows (head_dim for q/k/v, 1 for gate/up): INVALID_ARGUMENT
// when rows / unit is not a multiple of size.
absl::StatusOr<Linear> ShardColumnParallel(const Linear& l, int rank, int size, int64_t unit);
// Even split of the input columns in units of `unit`; the bias stays on rank 0 so that
// the all-reduce adds it once.
absl::StatusOr<Linear> ShardRowParallel(const Linear& l, int rank, int size, int64_t unit);

struct TpLayer {
  int32_t n_heads = 0;     // query heads on this rank
  int32_t n_kv_heads = 0;  // KV heads on this rank
  std::vector<float> attn_norm, ffn_norm;
  Linear q, k, v, o, gate, up, down;
};

absl::StatusOr<TpLayer> ShardDecoderLayer(const LayerWeights& layer, const ModelConfig& config,
                                          int rank, int size);

// cos/sin [max_pos][head_dim/2] exactly as the CPU runner builds them (none, linear and
// llama3 scaling); shared with the CUDA runner.
absl::Status BuildRopeTables(const ModelConfig& config, int32_t max_pos, std::vector<float>* cos,
                             std::vector<float>* sin);

// One decoder layer over the prefill of one sequence: x [T][hidden] (positions 0..T-1,
// causal attention over the sequence itself, fp32 K/V) is updated in place with this
// rank's shard; collectives make x identical on all ranks afterwards.
absl::Status TpDecoderLayerForward(const TpLayer& layer, const ModelConfig& config,
                                   Communicator& comm, float* x, int64_t n_tokens,
                                   const std::vector<float>& rope_cos,
                                   const std::vector<float>& rope_sin, ThreadPool& pool);

}  // namespace compressd
