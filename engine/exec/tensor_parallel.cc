#include "engine/exec/tensor_parallel.h"

#include <cmath>
#include <cstring>

#include "kernels/attention.h"
#include "kernels/ops.h"

namespace compressd {
namespace {

bool IsDense(const Linear& l) {
  const auto& f = l.w.format;
  return f.kind == kernels::WeightKind::kDense && !l.first &&
         (f.dtype == DType::kF32 || f.dtype == DType::kF16 || f.dtype == DType::kBF16);
}

Linear WithBytes(const Linear& l, int64_t rows, int64_t cols, std::shared_ptr<uint8_t[]> bytes,
                 size_t n_bytes) {
  Linear out;
  out.w.format = l.w.format;
  out.w.rows = rows;
  out.w.cols = cols;
  out.w.data = bytes.get();
  out.w.data_bytes = n_bytes;
  out.format_name = l.format_name;
  out.storage.push_back(std::shared_ptr<const void>(bytes, bytes.get()));
  return out;
}

}  // namespace

absl::StatusOr<Linear> SliceLinearRows(const Linear& l, int64_t row_begin, int64_t row_end) {
  if (!IsDense(l)) {
    return absl::UnimplementedError(absl::StrCat("tensor parallel: cannot shard format ",
                                                 l.format_name));
  }
  if (row_begin < 0 || row_end > l.rows() || row_begin >= row_end) {
    return absl::InvalidArgumentError("SliceLinearRows: bad row range");
  }
  const size_t es = kernels::DTypeSize(l.w.format.dtype);
  const size_t row_bytes = static_cast<size_t>(l.cols()) * es;
  const size_t n = static_cast<size_t>(row_end - row_begin) * row_bytes;
  std::shared_ptr<uint8_t[]> bytes(new uint8_t[n]);
  std::memcpy(bytes.get(), static_cast<const uint8_t*>(l.w.data) + row_begin * row_bytes, n);
  Linear out = WithBytes(l, row_end - row_begin, l.cols(), bytes, n);
  if (!l.bias.empty()) out.bias.assign(l.bias.begin() + row_begin, l.bias.begin() + row_end);
  return out;
}

absl::StatusOr<Linear> SliceLinearCols(const Linear& l, int64_t col_begin, int64_t col_end,
                                       bool keep_bias) {
  if (!IsDense(l)) {
    return absl::UnimplementedError(absl::StrCat("tensor parallel: cannot shard format ",
                                                 l.format_name));
  }
  if (col_begin < 0 || col_end > l.cols() || col_begin >= col_end) {
    return absl::InvalidArgumentError("SliceLinearCols: bad column range");
  }
  const size_t es = kernels::DTypeSize(l.w.format.dtype);
  const int64_t width = col_end - col_begin;
  const size_t n = static_cast<size_t>(l.rows() * width) * es;
  std::shared_ptr<uint8_t[]> bytes(new uint8_t[n]);
  const auto* src = static_cast<const uint8_t*>(l.w.data);
  for (int64_t r = 0; r < l.rows(); ++r) {
    std::memcpy(bytes.get() + r * width * es, src + (r * l.cols() + col_begin) * es, width * es);
  }
  Linear out = WithBytes(l, l.rows(), width, bytes, n);
  if (keep_bias) out.bias = l.bias;
  return out;
}

absl::StatusOr<Linear> ShardColumnParallel(const Linear& l, int rank, int size, int64_t unit) {
  if (size <= 0 || rank < 0 || rank >= size || unit <= 0 || l.rows() % unit != 0 ||
      (l.rows() / unit) % size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot split ", l.rows(), " rows in units of ",
                                                   unit, " over ", size, " ranks"));
  }
  const int64_t per = l.rows() / size;
  return SliceLinearRows(l, rank * per, (rank + 1) * per);
}

absl::StatusOr<Linear> ShardRowParallel(const Linear& l, int rank, int size, int64_t unit) {
  if (size <= 0 || rank < 0 || rank >= size || unit <= 0 || l.cols() % unit != 0 ||
      (l.cols() / unit) % size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot split ", l.cols(),
                                                   " columns in units of ", unit, " over ", size,
                                                   " ranks"));
  }
  const int64_t per = l.cols() / size;
  return SliceLinearCols(l, rank * per, (rank + 1) * per, rank == 0);
}

absl::StatusOr<TpLayer> ShardDecoderLayer(const LayerWeights& w, const ModelConfig& c, int rank,
                                          int size) {
  const int nh = c.num_attention_heads, nkv = c.num_key_value_heads, hd = c.head_dim;
  if (nh % size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(nh, " attention heads do not split over ", size, " ranks"));
  }
  if (!(nkv % size == 0 || size % nkv == 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(nkv, " KV heads do not split over (or replicate to) ", size, " ranks"));
  }
  TpLayer t;
  t.n_heads = nh / size;
  t.attn_norm = w.attn_norm;
  t.ffn_norm = w.ffn_norm;
  ASSIGN_OR_RETURN(t.q, ShardColumnParallel(w.q, rank, size, hd));
  if (nkv % size == 0) {
    t.n_kv_heads = nkv / size;
    ASSIGN_OR_RETURN(t.k, ShardColumnParallel(w.k, rank, size, hd));
    ASSIGN_OR_RETURN(t.v, ShardColumnParallel(w.v, rank, size, hd));
  } else {
    // Fewer KV heads than ranks: rank r serves query heads of KV head r / (size / nkv).
    t.n_kv_heads = 1;
    const int64_t head = rank / (size / nkv);
    ASSIGN_OR_RETURN(t.k, SliceLinearRows(w.k, head * hd, (head + 1) * hd));
    ASSIGN_OR_RETURN(t.v, SliceLinearRows(w.v, head * hd, (head + 1) * hd));
  }
  ASSIGN_OR_RETURN(t.o, ShardRowParallel(w.o, rank, size, hd));
  ASSIGN_OR_RETURN(t.gate, ShardColumnParallel(w.gate, rank, size, 1));
  ASSIGN_OR_RETURN(t.up, ShardColumnParallel(w.up, rank, size, 1));
  ASSIGN_OR_RETURN(t.down, ShardRowParallel(w.down, rank, size, 1));
  return t;
}

absl::Status BuildRopeTables(const ModelConfig& c, int32_t max_pos, std::vector<float>* cos,
                             std::vector<float>* sin) {
  const int half = c.head_dim / 2;
  std::vector<double> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    inv_freq[i] = 1.0 / std::pow(static_cast<double>(c.rope_theta), 2.0 * i / c.head_dim);
  }
  if (c.rope_scaling.type == RopeScalingType::kLinear) {
    for (double& f : inv_freq) f /= c.rope_scaling.factor;
  } else if (c.rope_scaling.type == RopeScalingType::kLlama3) {
    const RopeScaling& rs = c.rope_scaling;
    const double old_ctx = rs.original_max_position_embeddings;
    const double low_wavelen = old_ctx / rs.low_freq_factor;
    const double high_wavelen = old_ctx / rs.high_freq_factor;
    for (double& f : inv_freq) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f /= rs.factor;
      } else {
        const double smooth = (old_ctx / wavelen - rs.low_freq_factor) /
                              (rs.high_freq_factor - rs.low_freq_factor);
        f = (1.0 - smooth) * f / rs.factor + smooth * f;
      }
    }
  }
  cos->resize(static_cast<size_t>(max_pos) * half);
  sin->resize(cos->size());
  for (int p = 0; p < max_pos; ++p) {
    for (int i = 0; i < half; ++i) {
      const double a = p * inv_freq[i];
      (*cos)[static_cast<size_t>(p) * half + i] = static_cast<float>(std::cos(a));
      (*sin)[static_cast<size_t>(p) * half + i] = static_cast<float>(std::sin(a));
    }
  }
  return absl::OkStatus();
}

absl::Status TpDecoderLayerForward(const TpLayer& L, const ModelConfig& c, Communicator& comm,
                                   float* x, int64_t T, const std::vector<float>& rope_cos,
                                   const std::vector<float>& rope_sin, ThreadPool& pool) {
  const int64_t H = c.hidden_size;
  const int hd = c.head_dim, half = hd / 2;
  const int nh = L.n_heads, nkv = L.n_kv_heads;
  const int64_t QD = static_cast<int64_t>(nh) * hd, KVD = static_cast<int64_t>(nkv) * hd;
  const int64_t F = L.gate.rows();
  if (static_cast<int64_t>(rope_cos.size()) < T * half) {
    return absl::InvalidArgumentError("rope tables shorter than the sequence");
  }
  std::vector<float> xn(T * H), q(T * QD), k(T * KVD), v(T * KVD), attn(T * QD), part(T * H);
  std::vector<float> gate(T * F), up(T * F), scratch;
  const float eps = c.rms_norm_eps;

  for (int64_t t = 0; t < T; ++t) {
    kernels::RmsNorm(x + t * H, L.attn_norm.data(), H, eps, xn.data() + t * H);
  }
  LinearForwardMany({&L.q, &L.k, &L.v}, xn.data(), T, {q.data(), k.data(), v.data()}, pool);
  // fp32 KV of this rank's heads as one block of T tokens: [nkv][T][hd].
  kernels::DenseKvLayout layout;
  layout.dtype = DType::kF32;
  layout.block_size = static_cast<int>(T);
  layout.n_kv_heads = nkv;
  layout.head_dim = hd;
  std::vector<float> kblock(T * KVD), vblock(T * KVD);
  for (int64_t t = 0; t < T; ++t) {
    const float* cs = rope_cos.data() + t * half;
    const float* sn = rope_sin.data() + t * half;
    kernels::RopeRotateHalf(q.data() + t * QD, nh, hd, cs, sn);
    kernels::RopeRotateHalf(k.data() + t * KVD, nkv, hd, cs, sn);
    kernels::StoreDenseKv(layout, kblock.data(), vblock.data(), static_cast<int>(t),
                          k.data() + t * KVD, v.data() + t * KVD);
  }
  const void* kp[1] = {kblock.data()};
  const void* vp[1] = {vblock.data()};
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  scratch.resize(T + 64);
  for (int64_t t = 0; t < T; ++t) {
    kernels::AttendDenseRef(layout, nh, q.data() + t * QD, kp, vp, static_cast<int>(t + 1), scale,
                            attn.data() + t * QD, scratch.data(), 0, nh);
  }
  LinearForward(L.o, attn.data(), T, part.data(), H, pool, &scratch);
  RETURN_IF_ERROR(comm.AllReduceSum(part.data(), T * H));
  for (int64_t t = 0; t < T; ++t) {
    kernels::AddInPlace(x + t * H, part.data() + t * H, H);
    kernels::RmsNorm(x + t * H, L.ffn_norm.data(), H, eps, xn.data() + t * H);
  }
  LinearForwardMany({&L.gate, &L.up}, xn.data(), T, {gate.data(), up.data()}, pool);
  kernels::SiluMul(gate.data(), up.data(), gate.data(), T * F);
  LinearForward(L.down, gate.data(), T, part.data(), H, pool, &scratch);
  RETURN_IF_ERROR(comm.AllReduceSum(part.data(), T * H));
  kernels::AddInPlace(x, part.data(), T * H);
  return absl::OkStatus();
}

}  // namespace compressd
