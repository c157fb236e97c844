#include "engine/exec/cuda/cuda_runner.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "engine/core/logging.h"
#include "engine/exec/cuda/cuda_backend.h"
#include "engine/exec/cuda/cuda_status.h"
#include "engine/exec/tensor_parallel.h"
#include "kernels/cuda_gemm_dense.h"
#include "kernels/cuda_ops.h"
#include "kernels/cuda_formats.h"
#include "kernels/gemm.h"
#include "kernels/quant.h"

namespace compressd {
namespace {

namespace kc = kernels::cuda;

constexpr int kGraphBuckets[] = {1, 2, 4, 8, 16, 32, 64};
constexpr int kMaxGraphBatch = 64;
constexpr int kSplitTokens = 256;
constexpr size_t kCublasWorkspace = 32u << 20;

// A device-side linear layer.
struct DeviceLinear {
  int64_t rows = 0, cols = 0;
  void* w = nullptr;       // fp16 [rows][cols] (dense)
  float* bias = nullptr;   // fp32 [rows] or null
  bool quant = false;
  kc::QuantWeightView qv;
  // Low-rank W = U V: `first` is V [rank][cols]; this layer's weight is U [rows][rank].
  std::shared_ptr<DeviceLinear> first;
};

// Group-wise integer weights in the shape the CUDA W4A16/W8A16 kernels read.
struct PlainQuantBuf {
  std::vector<uint8_t> codes;
  std::vector<float> scales, mins;
  kernels::PlainQuantMatrix m;
};

// Maps a CPU quantized layer onto the CUDA layout when that is exact: group formats of 4
// or 8 bits (RTN, GPTQ, QuantEase: same bytes) and per-row int8 (int8, w8a8: the row scale
// repeated per group, codes shifted to unsigned). False for every other format.
// CPU rows are padded to a multiple of the group (e.g. SmolLM2's 576 columns to 640 with
// g128); the CUDA layout has no padding, so such a layer uses a CUDA group that divides the
// real column count (g/2, g/4, ...) with each CPU group's {scale, min} repeated: exact.
bool ToPlainQuant(const kernels::PackedWeight& w, PlainQuantBuf* out) {
  namespace k = kernels;
  const k::WeightFormat& f = w.format;
  if (f.kind != k::WeightKind::kQuant) return false;
  const auto variant = static_cast<k::QuantVariant>(f.variant);
  const int64_t rows = w.rows, cols = w.cols;
  if (cols % 32 != 0) return false;
  if (variant == k::QuantVariant::kGroup && (f.bits == 4 || f.bits == 8) &&
      f.group_size % 32 == 0) {
    int cuda_group = f.group_size;
    while (cols % cuda_group != 0) cuda_group /= 2;
    if (cuda_group < 32 || cuda_group % 32 != 0) return false;
    const int64_t cpu_groups = k::QuantPaddedCols(f, cols) / f.group_size;
    const int64_t ng = cols / cuda_group;
    out->codes.resize(static_cast<size_t>(rows * cols));
    out->scales.resize(static_cast<size_t>(rows * ng));
    out->mins.resize(out->scales.size());
    std::vector<float> sc(cpu_groups), mn(cpu_groups);
    for (int64_t r = 0; r < rows; ++r) {
      const k::quant_internal::RowView rv = k::quant_internal::RowCodes(w, r);
      for (int64_t c = 0; c < cols; c += k::kQuantChunk) {
        k::quant_internal::UnpackChunk(rv.codes + (c / k::kQuantChunk) * k::ChunkBytes(rv.bits),
                                       rv.bits, out->codes.data() + r * cols + c);
      }
      k::quant_internal::RowGroupParams(w, r, sc.data(), mn.data());
      for (int64_t g = 0; g < ng; ++g) {
        const int64_t cg = g * cuda_group / f.group_size;
        out->scales[r * ng + g] = sc[cg];
        out->mins[r * ng + g] = mn[cg];
      }
    }
    out->m = {rows, cols, cuda_group, f.bits, out->codes.data(), out->scales.data(), nullptr,
              out->mins.data()};
    return true;
  }
  if (variant == k::QuantVariant::kInt8Row || variant == k::QuantVariant::kW8A8) {
    const int group = cols % 128 == 0 ? 128 : (cols % 64 == 0 ? 64 : 32);
    const int64_t ng = cols / group;
    const auto* q = static_cast<const int8_t*>(w.data);
    const auto* scale = static_cast<const float*>(w.aux[0]);
    out->codes.resize(static_cast<size_t>(rows * cols));
    out->scales.resize(static_cast<size_t>(rows * ng));
    const int64_t stride = k::QuantPaddedCols(f, cols);  // int8 rows are padded too
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        out->codes[r * cols + c] = static_cast<uint8_t>(q[r * stride + c] + 128);
      }
      for (int64_t g = 0; g < ng; ++g) out->scales[r * ng + g] = scale[r];
    }
    // zeros = null: code 128 decodes to 0.
    out->m = {rows, cols, group, 8, out->codes.data(), out->scales.data(), nullptr, nullptr};
    return true;
  }
  return false;
}

struct DeviceLayer {
  float* attn_norm = nullptr;
  float* ffn_norm = nullptr;
  DeviceLinear q, k, v, o, gate, up, down;
};

// Owns device allocations made through the backend.
class DeviceArena {
 public:
  explicit DeviceArena(CudaBackend* b) : b_(b) {}
  ~DeviceArena() {
    for (void* p : ptrs_) b_->Free(p);
  }
  absl::StatusOr<void*> Alloc(size_t bytes) {
    ASSIGN_OR_RETURN(void* p, b_->Allocate(bytes));
    ptrs_.push_back(p);
    return p;
  }
  template <typename T>
  absl::StatusOr<T*> Upload(const T* host, size_t n) {
    ASSIGN_OR_RETURN(void* p, Alloc(n * sizeof(T)));
    RETURN_IF_ERROR(b_->CopyToDevice(p, host, n * sizeof(T)));
    return static_cast<T*>(p);
  }

 private:
  CudaBackend* b_;
  std::vector<void*> ptrs_;
};

class CudaRunnerImpl : public CudaModelRunner {
 public:
  CudaRunnerImpl(std::shared_ptr<const Model> model, KvCache* cache, int32_t max_context,
                 std::unique_ptr<CudaBackend> backend)
      : model_(std::move(model)),
        cache_(cache),
        max_context_(max_context),
        backend_(std::move(backend)),
        weights_(backend_.get()),
        buffers_(std::make_unique<DeviceArena>(backend_.get())) {}

  ~CudaRunnerImpl() override {
    backend_->Synchronize().IgnoreError();
    for (auto& [b, g] : graphs_) cudaGraphExecDestroy(g);
    if (host_ints_) backend_->FreeHost(host_ints_);
    if (host_logits_) backend_->FreeHost(host_logits_);
  }

  absl::Status Init();
  absl::StatusOr<const float*> Forward(const std::vector<BatchEntry>& batch,
                                       int64_t* n_rows) override;
  const Model& model() const override { return *model_; }
  int32_t max_context() const override { return max_context_; }
  std::string device_name() const override { return backend_->name(); }
  int64_t graph_steps() const override { return graph_steps_; }
  int64_t eager_steps() const override { return eager_steps_; }
  int64_t fp16_fallback_layers() const override { return fallback_layers_; }

 private:
  absl::StatusOr<DeviceLinear> UploadLinear(const Linear& l);
  absl::Status Reserve(int64_t tokens, int64_t rows, int64_t table_entries, int n_splits);
  absl::Status Gemm(const DeviceLinear& l, const void* x, int64_t n, float* y, int64_t ldy,
                    bool accumulate);
  // Enqueues the whole step for T tokens (rows logits rows) on the stream.
  absl::Status Enqueue(int64_t T, int64_t rows, int n_splits);

  std::shared_ptr<const Model> model_;
  KvCache* cache_;
  int32_t max_context_;
  std::unique_ptr<CudaBackend> backend_;
  DeviceArena weights_;
  std::unique_ptr<DeviceArena> buffers_;
  std::unique_ptr<kc::DenseGemm> dense_;
  std::vector<DeviceLayer> layers_;
  void* embed_ = nullptr;  // fp16 [vocab][hidden]
  float* final_norm_ = nullptr;
  DeviceLinear lm_head_;
  float *rope_cos_ = nullptr, *rope_sin_ = nullptr;
  void* kv_arena_ = nullptr;

  // Step buffers, sized by Reserve(); graphs capture their addresses.
  int64_t cap_tokens_ = 0, cap_rows_ = 0, cap_table_ = 0;
  int cap_splits_ = 0;
  int32_t* ints_ = nullptr;  // tokens | pos | slots | table_offset | n_ctx | src_rows | tables
  int32_t* host_ints_ = nullptr;
  float *x_ = nullptr, *q_ = nullptr, *k_ = nullptr, *v_ = nullptr, *gate_ = nullptr,
        *up_ = nullptr, *logits_ = nullptr;
  void* xh_ = nullptr;    // fp16 [T][max(H, F)]
  void* attn_ = nullptr;  // fp16 [T][QD]
  void* attn_ws_ = nullptr;
  float* host_logits_ = nullptr;
  std::map<int, cudaGraphExec_t> graphs_;
  int64_t graph_steps_ = 0, eager_steps_ = 0;
  // Low-rank intermediates [T][max_rank_] (fp32 GEMM output, fp16 GEMM input).
  int64_t max_rank_ = 0;
  float* lr_f32_ = nullptr;
  void* lr_h_ = nullptr;
  uint64_t device_weight_bytes_ = 0;
  std::set<std::string> fallback_formats_;
  int64_t fallback_layers_ = 0;
};

absl::StatusOr<DeviceLinear> CudaRunnerImpl::UploadLinear(const Linear& l) {
  DeviceLinear d;
  d.rows = l.w.rows;
  d.cols = l.w.cols;
  if (l.first) {
    // Low-rank: two GEMMs through a rank-wide intermediate.
    ASSIGN_OR_RETURN(DeviceLinear v, UploadLinear(*l.first));
    d.first = std::make_shared<DeviceLinear>(std::move(v));
    max_rank_ = std::max(max_rank_, d.cols);
  }
  const auto& f = l.w.format;
  const bool dense16 = f.kind == kernels::WeightKind::kDense &&
                       (f.dtype == DType::kF32 || f.dtype == DType::kF16 || f.dtype == DType::kBF16);
  PlainQuantBuf pq;
  if (!dense16 && ToPlainQuant(l.w, &pq) &&
      kc::QuantGemmSupported(backend_->arch(), pq.m.bits, pq.m.group_size, d.rows, d.cols) &&
      kernels::CudaQuantCheck(pq.m).empty()) {
    const kernels::CudaQuantWeight cw = kernels::CudaQuantRepack(pq.m);
    ASSIGN_OR_RETURN(uint8_t* codes, weights_.Upload(cw.codes.data(), cw.codes.size()));
    ASSIGN_OR_RETURN(uint16_t* so, weights_.Upload(cw.scale_offset.data(), cw.scale_offset.size()));
    d.quant = true;
    d.qv = {d.rows, d.cols, cw.group_size, cw.bits, codes, so};
    device_weight_bytes_ += cw.codes.size() + cw.scale_offset.size() * 2;
  } else {
    if (!dense16) ++fallback_layers_;
    if (!dense16 && fallback_formats_.insert(l.format_name).second) {
      LOG_WARN("CUDA: weight format {} has no fused CUDA kernel; its layers are uploaded as fp16",
               l.format_name);
    }
    std::vector<float> rowf(d.cols);
    std::vector<uint16_t> h(static_cast<size_t>(d.rows * d.cols));
    for (int64_t r = 0; r < d.rows; ++r) {
      kernels::DequantizeRows(l.w, r, r + 1, rowf.data());
      for (int64_t c = 0; c < d.cols; ++c) h[r * d.cols + c] = kernels::F32ToF16(rowf[c]);
    }
    ASSIGN_OR_RETURN(uint16_t* w, weights_.Upload(h.data(), h.size()));
    d.w = w;
    device_weight_bytes_ += h.size() * 2;
  }
  if (!l.bias.empty()) {
    ASSIGN_OR_RETURN(d.bias, weights_.Upload(l.bias.data(), l.bias.size()));
  }
  return d;
}

absl::Status CudaRunnerImpl::Init() {
  const ModelConfig& c = model_->config;
  if (cache_->codec().name() != "fp16") {
    return absl::UnimplementedError(absl::StrCat("CUDA runner: KV codec ", cache_->codec().name(),
                                                 " has no CUDA kernel; use --kv-cache fp16"));
  }
  if (!kc::AttentionSupported(c.head_dim, c.num_attention_heads, c.num_key_value_heads)) {
    return absl::UnimplementedError(absl::StrCat("CUDA runner: head_dim ", c.head_dim, " with ",
                                                 c.num_attention_heads, "/", c.num_key_value_heads,
                                                 " heads has no attention kernel"));
  }
  RETURN_IF_ERROR(backend_->MakeCurrent());
  ASSIGN_OR_RETURN(void* ws, weights_.Alloc(kCublasWorkspace));
  if (const std::string why = kc::DenseGemm::LoadError(); !why.empty()) {
    return absl::UnavailableError(absl::StrCat("CUDA runner: ", why,
                                               "; set LD_LIBRARY_PATH or COMPRESSD_CUBLASLT"));
  }
  RETURN_IF_CUDA_ERROR(kc::DenseGemm::Create(ws, kCublasWorkspace, &dense_));
  for (const LayerWeights& lw : model_->weights.layers) {
    DeviceLayer d;
    ASSIGN_OR_RETURN(d.attn_norm, weights_.Upload(lw.attn_norm.data(), lw.attn_norm.size()));
    ASSIGN_OR_RETURN(d.ffn_norm, weights_.Upload(lw.ffn_norm.data(), lw.ffn_norm.size()));
    ASSIGN_OR_RETURN(d.q, UploadLinear(lw.q));
    ASSIGN_OR_RETURN(d.k, UploadLinear(lw.k));
    ASSIGN_OR_RETURN(d.v, UploadLinear(lw.v));
    ASSIGN_OR_RETURN(d.o, UploadLinear(lw.o));
    ASSIGN_OR_RETURN(d.gate, UploadLinear(lw.gate));
    ASSIGN_OR_RETURN(d.up, UploadLinear(lw.up));
    ASSIGN_OR_RETURN(d.down, UploadLinear(lw.down));
    layers_.push_back(d);
    RETURN_IF_ERROR(backend_->Synchronize());  // bound the host staging memory
  }
  {
    const int64_t H = c.hidden_size;
    std::vector<float> row(H);
    std::vector<uint16_t> h(static_cast<size_t>(c.vocab_size) * H);
    for (int32_t t = 0; t < c.vocab_size; ++t) {
      EmbedToken(model_->weights, H, t, row.data());  // tied + compressed: the lm_head rows
      for (int64_t i = 0; i < H; ++i) h[t * H + i] = kernels::F32ToF16(row[i]);
    }
    ASSIGN_OR_RETURN(uint16_t* e, weights_.Upload(h.data(), h.size()));
    embed_ = e;
    RETURN_IF_ERROR(backend_->Synchronize());
  }
  ASSIGN_OR_RETURN(final_norm_, weights_.Upload(model_->weights.final_norm.data(),
                                                model_->weights.final_norm.size()));
  ASSIGN_OR_RETURN(lm_head_, UploadLinear(model_->weights.lm_head));
  std::vector<float> cs, sn;
  RETURN_IF_ERROR(BuildRopeTables(c, max_context_, &cs, &sn));
  ASSIGN_OR_RETURN(rope_cos_, weights_.Upload(cs.data(), cs.size()));
  ASSIGN_OR_RETURN(rope_sin_, weights_.Upload(sn.data(), sn.size()));
  LOG_INFO("CUDA: {} linear-layer weight bytes on {}", device_weight_bytes_, backend_->name());
  const size_t kv_bytes = cache_->BlockBytes() * static_cast<size_t>(cache_->pool().num_blocks());
  ASSIGN_OR_RETURN(kv_arena_, weights_.Alloc(kv_bytes));
  RETURN_IF_CUDA_ERROR(cudaMemsetAsync(kv_arena_, 0, kv_bytes, backend_->stream()));
  const int blocks_per_seq = (max_context_ + cache_->block_size() - 1) / cache_->block_size();
  RETURN_IF_ERROR(Reserve(kMaxGraphBatch, kMaxGraphBatch,
                          static_cast<int64_t>(kMaxGraphBatch) * blocks_per_seq,
                          (max_context_ + kSplitTokens - 1) / kSplitTokens));
  return backend_->Synchronize();
}

absl::Status CudaRunnerImpl::Reserve(int64_t T, int64_t rows, int64_t table, int n_splits) {
  if (T <= cap_tokens_ && rows <= cap_rows_ && table <= cap_table_ && n_splits <= cap_splits_) {
    return absl::OkStatus();
  }
  const ModelConfig& c = model_->config;
  T = std::max(T, cap_tokens_);
  rows = std::max(rows, cap_rows_);
  table = std::max(table, cap_table_);
  n_splits = std::max(n_splits, cap_splits_);
  RETURN_IF_ERROR(backend_->Synchronize());
  // New addresses: captured graphs would read stale buffers.
  for (auto& [b, g] : graphs_) cudaGraphExecDestroy(g);
  graphs_.clear();
  buffers_ = std::make_unique<DeviceArena>(backend_.get());
  if (host_ints_) backend_->FreeHost(host_ints_);
  if (host_logits_) backend_->FreeHost(host_logits_);
  host_ints_ = nullptr;
  host_logits_ = nullptr;
  const int64_t H = c.hidden_size, QD = c.q_dim(), KVD = c.kv_dim(), F = c.intermediate_size;
  const size_t n_ints = static_cast<size_t>(5 * T + rows + table);
  auto alloc_f = [&](int64_t n) -> absl::StatusOr<float*> {
    ASSIGN_OR_RETURN(void* p, buffers_->Alloc(static_cast<size_t>(n) * sizeof(float)));
    return static_cast<float*>(p);
  };
  ASSIGN_OR_RETURN(void* ints, buffers_->Alloc(n_ints * sizeof(int32_t)));
  ints_ = static_cast<int32_t*>(ints);
  ASSIGN_OR_RETURN(void* hi, backend_->AllocateHost(n_ints * sizeof(int32_t)));
  host_ints_ = static_cast<int32_t*>(hi);
  ASSIGN_OR_RETURN(x_, alloc_f(T * H));
  ASSIGN_OR_RETURN(q_, alloc_f(T * QD));
  ASSIGN_OR_RETURN(k_, alloc_f(T * KVD));
  ASSIGN_OR_RETURN(v_, alloc_f(T * KVD));
  ASSIGN_OR_RETURN(gate_, alloc_f(T * F));
  ASSIGN_OR_RETURN(up_, alloc_f(T * F));
  ASSIGN_OR_RETURN(logits_, alloc_f(rows * c.vocab_size));
  if (max_rank_ > 0) {
    ASSIGN_OR_RETURN(lr_f32_, alloc_f(T * max_rank_));
    ASSIGN_OR_RETURN(lr_h_, buffers_->Alloc(static_cast<size_t>(T * max_rank_) * 2));
  }
  ASSIGN_OR_RETURN(xh_, buffers_->Alloc(static_cast<size_t>(T * std::max(H, F)) * 2));
  ASSIGN_OR_RETURN(attn_, buffers_->Alloc(static_cast<size_t>(T * QD) * 2));
  ASSIGN_OR_RETURN(attn_ws_, buffers_->Alloc(
                                 kc::AttentionWorkspaceBytes(T, c.num_attention_heads, c.head_dim, n_splits)));
  ASSIGN_OR_RETURN(void* hl, backend_->AllocateHost(static_cast<size_t>(rows * c.vocab_size) * 4));
  host_logits_ = static_cast<float*>(hl);
  cap_tokens_ = T;
  cap_rows_ = rows;
  cap_table_ = table;
  cap_splits_ = n_splits;
  return absl::OkStatus();
}

absl::Status CudaRunnerImpl::Gemm(const DeviceLinear& l, const void* x, int64_t n, float* y,
                                  int64_t ldy, bool accumulate) {
  cudaStream_t s = backend_->stream();
  if (l.first) {
    RETURN_IF_ERROR(Gemm(*l.first, x, n, lr_f32_, l.cols, false));
    RETURN_IF_CUDA_ERROR(kc::FloatToHalf(lr_f32_, n * l.cols, lr_h_, s));
    x = lr_h_;
  }
  if (l.quant) {
    RETURN_IF_CUDA_ERROR(kc::QuantGemm(l.qv, x, n, y, ldy, accumulate, s));
  } else {
    const cudaError_t e = dense_->Run(DType::kF16, l.w, l.rows, l.cols, x, n, y, ldy, accumulate, s);
    if (e != cudaSuccess) {
      return absl::InternalError(absl::StrCat("cuBLASLt GEMM ", l.rows, "x", l.cols, " n=", n,
                                              " failed, cublasStatus ", dense_->last_cublas_status()));
    }
  }
  if (l.bias) RETURN_IF_CUDA_ERROR(kc::AddBias(y, ldy, l.bias, n, l.rows, s));
  return absl::OkStatus();
}

absl::Status CudaRunnerImpl::Enqueue(int64_t T, int64_t rows, int n_splits) {
  const ModelConfig& c = model_->config;
  cudaStream_t s = backend_->stream();
  const int64_t H = c.hidden_size, QD = c.q_dim(), KVD = c.kv_dim(), F = c.intermediate_size;
  const int32_t* tokens = ints_;
  const int32_t* pos = ints_ + T;
  const int32_t* slots = ints_ + 2 * T;
  const int32_t* table_offset = ints_ + 3 * T;
  const int32_t* n_ctx = ints_ + 4 * T;
  const int32_t* src_rows = ints_ + 5 * T;
  const int32_t* tables = src_rows + rows;
  const float eps = c.rms_norm_eps;

  RETURN_IF_CUDA_ERROR(kc::EmbeddingGather(embed_, tokens, T, H, x_, s));
  kc::PagedKv kv;
  kv.arena = kv_arena_;
  kv.layer_bytes = static_cast<int64_t>(cache_->codec().LayerBlockBytes());
  kv.n_layers = c.num_hidden_layers;
  kv.block_size = cache_->block_size();
  kv.n_kv_heads = c.num_key_value_heads;
  kv.head_dim = c.head_dim;
  kc::AttentionParams ap;
  ap.n_heads = c.num_attention_heads;
  ap.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  ap.split_tokens = kSplitTokens;
  ap.n_splits = n_splits;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const DeviceLayer& L = layers_[l];
    kv.layer = l;
    RETURN_IF_CUDA_ERROR(kc::RmsNormToHalf(x_, L.attn_norm, nullptr, T, H, eps, xh_, s));
    RETURN_IF_ERROR(Gemm(L.q, xh_, T, q_, QD, false));
    RETURN_IF_ERROR(Gemm(L.k, xh_, T, k_, KVD, false));
    RETURN_IF_ERROR(Gemm(L.v, xh_, T, v_, KVD, false));
    RETURN_IF_CUDA_ERROR(kc::RopeRotateHalf(q_, k_, pos, T, c.num_attention_heads,
                                            c.num_key_value_heads, c.head_dim, rope_cos_,
                                            rope_sin_, s));
    RETURN_IF_CUDA_ERROR(kc::StoreKv(kv, k_, v_, slots, T, s));
    RETURN_IF_CUDA_ERROR(kc::PagedAttention(kv, ap, q_, tables, table_offset, n_ctx, T, attn_ws_,
                                            attn_, s));
    RETURN_IF_ERROR(Gemm(L.o, attn_, T, x_, H, /*accumulate=*/true));
    RETURN_IF_CUDA_ERROR(kc::RmsNormToHalf(x_, L.ffn_norm, nullptr, T, H, eps, xh_, s));
    RETURN_IF_ERROR(Gemm(L.gate, xh_, T, gate_, F, false));
    RETURN_IF_ERROR(Gemm(L.up, xh_, T, up_, F, false));
    RETURN_IF_CUDA_ERROR(kc::SwiGluToHalf(gate_, up_, F, T, F, xh_, s));
    RETURN_IF_ERROR(Gemm(L.down, xh_, T, x_, H, /*accumulate=*/true));
  }
  if (rows == 0) return absl::OkStatus();
  RETURN_IF_CUDA_ERROR(kc::RmsNormToHalf(x_, final_norm_, src_rows, rows, H, eps, xh_, s));
  return Gemm(lm_head_, xh_, rows, logits_, c.vocab_size, false);
}

absl::StatusOr<const float*> CudaRunnerImpl::Forward(const std::vector<BatchEntry>& batch,
                                                     int64_t* n_rows) {
  const ModelConfig& c = model_->config;
  const int bs = cache_->block_size();
  int64_t T = 0, rows = 0, table = 0;
  int max_ctx = 0;
  bool pure_decode = !batch.empty() && batch.size() <= static_cast<size_t>(kMaxGraphBatch);
  for (const BatchEntry& e : batch) {
    if (e.n_tokens < 0 || e.start_pos < 0 || e.start_pos + e.n_tokens > max_context_ ||
        static_cast<int64_t>(e.n_blocks) * bs < e.start_pos + e.n_tokens) {
      return absl::InvalidArgumentError("CUDA runner: batch entry outside its context/blocks");
    }
    T += e.n_tokens;
    rows += e.logits == LogitsMode::kAll ? e.n_tokens : (e.logits == LogitsMode::kLast ? 1 : 0);
    table += e.n_blocks;
    max_ctx = std::max(max_ctx, e.start_pos + e.n_tokens);
    pure_decode = pure_decode && e.n_tokens == 1 && e.logits == LogitsMode::kLast;
  }
  *n_rows = rows;
  if (T == 0) return nullptr;
  RETURN_IF_ERROR(backend_->MakeCurrent());

  // A decode bucket pads the batch to a captured size: padded rows store nothing
  // (slot -1) and attend to nothing (n_ctx 0).
  int bucket = 0;
  if (pure_decode) {
    for (int b : kGraphBuckets) {
      if (b >= T) {
        bucket = b;
        break;
      }
    }
  }
  const int64_t TT = bucket ? bucket : T;
  const int64_t RR = bucket ? bucket : rows;
  const int blocks_per_seq = (max_context_ + bs - 1) / bs;
  const int n_splits = bucket ? (max_context_ + kSplitTokens - 1) / kSplitTokens
                              : (max_ctx + kSplitTokens - 1) / kSplitTokens;
  RETURN_IF_ERROR(Reserve(TT, RR, bucket ? int64_t{kMaxGraphBatch} * blocks_per_seq : table,
                          n_splits));

  // Host staging in the layout Enqueue() reads.
  int32_t* h = host_ints_;
  int32_t *tok = h, *pos = h + TT, *slot = h + 2 * TT, *toff = h + 3 * TT, *nctx = h + 4 * TT;
  int32_t* src = h + 5 * TT;
  int32_t* tab = src + RR;
  int64_t t = 0, r = 0, off = 0;
  for (const BatchEntry& e : batch) {
    for (int i = 0; i < e.n_tokens; ++i, ++t) {
      const int32_t p = e.start_pos + i;
      tok[t] = e.tokens[i];
      pos[t] = p;
      slot[t] = e.block_table[p / bs] * bs + p % bs;
      toff[t] = static_cast<int32_t>(off);
      nctx[t] = p + 1;
      if (e.logits == LogitsMode::kAll) src[r++] = static_cast<int32_t>(t);
    }
    if (e.logits == LogitsMode::kLast && e.n_tokens > 0) src[r++] = static_cast<int32_t>(t - 1);
    std::memcpy(tab + off, e.block_table, sizeof(int32_t) * e.n_blocks);
    off += e.n_blocks;
  }
  for (; t < TT; ++t) {  // bucket padding
    tok[t] = 0;
    pos[t] = 0;
    slot[t] = -1;
    toff[t] = 0;
    nctx[t] = 0;
  }
  for (; r < RR; ++r) src[r] = static_cast<int32_t>(r);
  cudaStream_t s = backend_->stream();
  const size_t n_ints = static_cast<size_t>(5 * TT + RR + off);
  RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(ints_, h, n_ints * sizeof(int32_t), cudaMemcpyHostToDevice, s));

  if (bucket) {
    auto it = graphs_.find(bucket);
    if (it == graphs_.end()) {
      cudaGraph_t graph = nullptr;
      RETURN_IF_CUDA_ERROR(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
      const absl::Status st = Enqueue(TT, RR, n_splits);
      const cudaError_t end = cudaStreamEndCapture(s, &graph);
      RETURN_IF_ERROR(st);
      RETURN_IF_CUDA_ERROR(end);
      cudaGraphExec_t exec = nullptr;
      const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
      cudaGraphDestroy(graph);
      RETURN_IF_CUDA_ERROR(inst);
      it = graphs_.emplace(bucket, exec).first;
    }
    RETURN_IF_CUDA_ERROR(cudaGraphLaunch(it->second, s));
    ++graph_steps_;
  } else {
    RETURN_IF_ERROR(Enqueue(TT, RR, n_splits));
    ++eager_steps_;
  }
  if (rows > 0) {
    RETURN_IF_ERROR(backend_->CopyToHost(host_logits_, logits_,
                                         static_cast<size_t>(rows * c.vocab_size) * sizeof(float)));
  }
  RETURN_IF_ERROR(backend_->Synchronize());
  return rows > 0 ? host_logits_ : nullptr;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaModelRunner>> MakeCudaRunner(std::shared_ptr<const Model> model,
                                                                 KvCache* cache,
                                                                 int32_t max_context,
                                                                 const std::string& device) {
  ASSIGN_OR_RETURN(DeviceSpec spec, ParseDevice(device));
  if (spec.kind != DeviceKind::kCuda) {
    return absl::InvalidArgumentError(absl::StrCat("MakeCudaRunner: '", device, "' is not cuda:N"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> backend, CudaBackend::Create(spec.index));
  auto runner = std::make_unique<CudaRunnerImpl>(std::move(model), cache, max_context,
                                                 std::move(backend));
  RETURN_IF_ERROR(runner->Init());
  return std::unique_ptr<CudaModelRunner>(std::move(runner));
}

}  // namespace compressd
