// ModelRunner: one forward step over a batch that mixes prefill chunks and decode tokens
// of many sequences. All tokens go through the linear layers together (a batch of B
// decodes reads each weight once); attention reads each sequence's own paged KV blocks.
//
// Engine thread only. Output logits are fp32 [rows][vocab] for the requested rows.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/core/thread_pool.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/model.h"

namespace compressd {

enum class LogitsMode : uint8_t { kNone = 0, kLast = 1, kAll = 2 };

struct BatchEntry {
  const int32_t* tokens = nullptr;  // n_tokens tokens at positions start_pos...
  int32_t n_tokens = 0;
  int32_t start_pos = 0;
  const int32_t* block_table = nullptr;  // covers positions [0, start_pos + n_tokens)
  int32_t n_blocks = 0;
  // Blocks of the table that hold two blocks' tokens (KvCodec::Demote). They all precede the
  // block holding start_pos, so position p >= start_pos is stored at table index
  // p / block_size - n_demoted; Attend finds them from the blocks' own headers.
  int32_t n_demoted = 0;
  LogitsMode logits = LogitsMode::kLast;
};

class ModelRunner {
 public:
  ModelRunner(std::shared_ptr<const Model> model, KvCache* cache, ThreadPool* pool,
              int32_t max_context);

  // Runs the batch; logits of the requested rows are written in batch order (kLast: one
  // row, kAll: n_tokens rows) and returned as a pointer valid until the next call.
  const float* Forward(const std::vector<BatchEntry>& batch, int64_t* n_rows);

  const Model& model() const { return *model_; }
  int32_t max_context() const { return max_context_; }

 private:
  void BuildRope();

  std::shared_ptr<const Model> model_;
  KvCache* cache_;
  ThreadPool* pool_;
  int32_t max_context_;
  std::vector<float> rope_cos_, rope_sin_;  // [max_context][head_dim/2]
  // Activations, sized to the largest batch seen.
  std::vector<float> x_, xn_, q_, k_, v_, attn_, gate_, up_, logits_, scratch_;
  std::vector<int32_t> pos_, entry_of_;
  std::vector<const uint8_t*> block_ptrs_;
};

}  // namespace compressd
