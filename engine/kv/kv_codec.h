// KvCodec: owns the byte layout of one KV block (block_size tokens of one layer, K and V)
// and the attention kernel that reads encoded blocks directly. The block pool and the
// scheduler never interpret these bytes.
//
// Threads: Store, Seal and Attend are called from the engine's worker threads on disjoint
// blocks/heads. Dense codecs hold no mutable state outside the block bytes; codecs that
// encode a block only once it is full (NeedsSeal) keep the tokens of a not-yet-full block in
// an fp16 staging buffer of their own (KIVI's full-precision residual window: at most one
// block per sequence and layer), guarded by an internal mutex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/core/status.h"

namespace compressd {

struct KvGeometry {
  int32_t n_layers = 0;
  int32_t n_heads = 0;     // query heads
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t block_size = 16; // tokens per block
};

// Second moments of the K and V that a model stores (after RoPE), per layer and KV head:
// k[((layer * n_kv_heads + h) * head_dim + i) * head_dim + j] = sum over tokens of k_i k_j.
struct KvMoments {
  KvGeometry geometry;
  std::vector<double> k, v;
  int64_t tokens = 0;  // per layer
};

class KvCodec {
 public:
  virtual ~KvCodec() = default;
  virtual std::string name() const = 0;
  const KvGeometry& geometry() const { return geo_; }

  // Bytes of one block for one layer (K and V together, all KV heads).
  virtual size_t LayerBlockBytes() const = 0;

  // Stores one token's k and v ([n_kv_heads][head_dim] fp32 each, after RoPE) at `slot` of
  // `block` (this layer's region of a block). Tokens arrive in slot order; a codec may
  // re-encode the block in place when it fills.
  virtual void Store(int layer, uint8_t* block, int slot, const float* k, const float* v) const = 0;

  // out[h] = softmax(q[h] . K / scale) V over tokens [0, n_ctx) for heads
  // [head_begin, head_end). blocks[i] is this layer's region of the sequence's i-th block.
  // scratch holds at least ScratchFloats(n_ctx) floats.
  virtual void Attend(int layer, const float* q, const uint8_t* const* blocks, int n_ctx,
                      float scale, float* out, float* scratch, int head_begin,
                      int head_end) const = 0;
  virtual size_t ScratchFloats(int n_ctx) const { return static_cast<size_t>(n_ctx) + 64; }

  // Capability: a codec that encodes a block when it fills returns true, and the runner calls
  // Seal(layer, block) for every block whose last slot was stored in a step, after all of the
  // step's Store calls for that layer and before any Attend of it (Store for a prefill chunk
  // runs on several threads, so "the Store of the last slot" is not "the last Store").
  // Seal may run concurrently for distinct blocks.
  virtual bool NeedsSeal() const { return false; }
  virtual void Seal(int /*layer*/, uint8_t* /*block*/) const {}
  // With NeedsSeal: true moves those Seal calls after the step's Attend calls of the layer
  // (codecs whose encoding uses the attention that the block's tokens received: MiKV, EMS).
  // Attend then also reads blocks that are full but not yet sealed (from the codec's staging).
  virtual bool SealAfterAttend() const { return false; }

  // Capability: codecs fitted to the model's K/V statistics (CSKV's channel projections).
  // The loader runs calibration text through the model with a recorder codec
  // (MakeKvMomentsRecorder) and passes the result to Calibrate before the codec stores anything
  // (engine/exec/evaluator.h: CalibrateKvCodec). Uncalibrated, such a codec still works, with a
  // fixed fallback (documented by the codec).
  virtual bool NeedsCalibration() const { return false; }
  virtual absl::Status Calibrate(const KvMoments& /*moments*/) { return absl::OkStatus(); }

  // Capability: a codec whose layers share storage (MiniCache's cross-layer pairs) lays out a
  // whole block, all layers, itself. It relies on KvCache's layout (kv_cache.h): the regions of
  // one block's layers are contiguous, layer l's at offset l * LayerBlockBytes from layer 0's,
  // so the region passed for `layer` minus layer * LayerBlockBytes is the block's base, and
  // LayerBlockBytes is the block's real bytes / n_layers (rounded up). Store/Seal/Attend are
  // called per layer as for any codec, with layer l's regions; whoever allocates blocks other
  // than through KvCache must allocate n_layers * LayerBlockBytes contiguous bytes per block.
  virtual bool SpansLayers() const { return false; }

  // Capability: recompression under memory pressure (the first step of the KV pressure ladder,
  // engine/sched/ladder.h). A codec that can demote returns true from CanDemote(min_bits, ...)
  // when one demotion keeps every component at >= min_bits, and names the step for metrics
  // (*from, *to: "int4" -> "int2"). Demote merges two sealed, full blocks of `layer` holding
  // consecutive tokens (a: the older block_size tokens, b: the next block_size) into dst
  // (which may alias a or b), holding 2 * block_size tokens in one region of LayerBlockBytes;
  // the caller then frees the other block. A demoted region is recognised by Attend from its
  // own bytes, wherever it sits before a sequence's last block; tokens are never stored into
  // it again (so the runner maps position p after D demoted blocks to table index
  // p / block_size - D, runner.h). Demote may run concurrently for distinct blocks.
  virtual bool CanDemote(int /*min_bits*/, std::string* /*from*/, std::string* /*to*/) const {
    return false;
  }
  virtual void Demote(int /*layer*/, const uint8_t* /*a*/, const uint8_t* /*b*/,
                      uint8_t* /*dst*/) const {}

  // Average bytes of KV per token across all layers.
  double BytesPerToken() const {
    return static_cast<double>(LayerBlockBytes()) * geo_.n_layers / geo_.block_size;
  }

 protected:
  explicit KvCodec(const KvGeometry& g) : geo_(g) {}
  KvGeometry geo_;
};

// A fp32 codec that also accumulates every stored token into *moments (which must outlive it;
// sized here). Store may run on several threads: accumulation is under a mutex per layer.
std::unique_ptr<KvCodec> MakeKvMomentsRecorder(const KvGeometry& geometry, KvMoments* moments);

// Codec by name: "fp32", "fp16", "bf16" here; compressed codecs register in
// engine/kv/codec_registry.cc. INVALID_ARGUMENT listing the known names otherwise.
absl::StatusOr<std::unique_ptr<KvCodec>> MakeKvCodec(const std::string& name,
                                                     const KvGeometry& geometry);
std::vector<std::string> KvCodecNames();

// Registration hook for codec families defined in other files.
using KvCodecMaker = std::unique_ptr<KvCodec> (*)(const std::string& name, const KvGeometry& g,
                                                  absl::Status* error);
void RegisterKvCodecMaker(KvCodecMaker maker, std::vector<std::string> names);

}  // namespace compressd
