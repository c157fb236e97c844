#include "engine/compress/linear.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/strings/str_format.h"
#include "engine/core/logging.h"
#include "engine/core/mmap_file.h"
#include "engine/model/ggml_blocks.h"
#include "kernels/gemm.h"
#include "kernels/ggml_quant.h"
#include "kernels/quant.h"

namespace compressd {
namespace {

const char* DenseName(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    default: return "?";
  }
}

}  // namespace

uint64_t Linear::bytes() const {
  uint64_t b = w.data_bytes;
  for (size_t a : w.aux_bytes) b += a;
  if (first) b += first->bytes();
  return b;
}

namespace {

// out[0..n) = the n F32/F16/BF16 values at p as fp32 (other dtypes: the caller's error).
void PlainToF32(DType dtype, const void* p, int64_t n, float* out) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(out, p, static_cast<size_t>(n) * sizeof(float));
      break;
    case DType::kF16: {
      const auto* h = static_cast<const uint16_t*>(p);
      for (int64_t i = 0; i < n; ++i) out[i] = kernels::F16ToF32(h[i]);
      break;
    }
    case DType::kBF16: {
      const auto* h = static_cast<const uint16_t*>(p);
      for (int64_t i = 0; i < n; ++i) out[i] = kernels::BF16ToF32(h[i]);
      break;
    }
    default:
      break;
  }
}

}  // namespace

absl::StatusOr<std::vector<float>> TensorToF32(const TensorView& t) {
  const int64_t n = t.numel();
  if (t.storage == StorageType::kQ8_0 || t.storage == StorageType::kQ4_0) {
    // GGUF blocks of 32 along the innermost dimension.
    const int64_t inner = t.shape.empty() ? n : t.shape.back();
    if (inner % 32 != 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, ": rows of ", inner,
                                                     " are not whole blocks of 32"));
    }
    const size_t block_bytes = t.storage == StorageType::kQ8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0);
    if (static_cast<size_t>(n / 32) * block_bytes > t.bytes) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, ": data shorter than shape"));
    }
    std::vector<float> out(static_cast<size_t>(n));
    if (t.storage == StorageType::kQ8_0) {
      DequantizeRowQ8_0(static_cast<const BlockQ8_0*>(t.data), n, out.data());
    } else {
      DequantizeRowQ4_0(static_cast<const BlockQ4_0*>(t.data), n, out.data());
    }
    return out;
  }
  if (t.storage != StorageType::kPlain) {
    return absl::UnimplementedError(absl::StrCat("tensor ", t.name, ": unsupported storage"));
  }
  if (static_cast<size_t>(n) * kernels::DTypeSize(t.dtype) > t.bytes) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, ": data shorter than shape"));
  }
  if (t.dtype != DType::kF32 && t.dtype != DType::kF16 && t.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor %s has dtype %s; expected F32, F16 or BF16", t.name, kernels::DTypeName(t.dtype)));
  }
  std::vector<float> out(static_cast<size_t>(n));
  PlainToF32(t.dtype, t.data, n, out.data());
  return out;
}

namespace {

bool AllBuffersMapped(const Linear& l) {
  bool any = false;
  if (l.w.data != nullptr) {
    if (!MmapFile::IsMapped(l.w.data, l.w.data_bytes)) return false;
    any = true;
  }
  for (int i = 0; i < 4; ++i) {
    if (l.w.aux[i] == nullptr) continue;
    if (!MmapFile::IsMapped(l.w.aux[i], l.w.aux_bytes[i])) return false;
    any = true;
  }
  return any && (l.first == nullptr || AllBuffersMapped(*l.first));
}

Linear CopyBuffers(const Linear& l) {
  Linear c = l;
  c.storage.clear();
  auto own = [&c](const void** p, size_t bytes) {
    if (*p == nullptr) return;
    std::shared_ptr<const uint8_t> buf = MmapFile::CopyToOwned(*p, bytes);
    MmapFile::ReleasePages(*p, bytes);  // read again from the file only if touched again
    *p = buf.get();
    c.storage.push_back(std::shared_ptr<const void>(buf, buf.get()));
  };
  own(&c.w.data, c.w.data_bytes);
  for (int i = 0; i < 4; ++i) own(&c.w.aux[i], c.w.aux_bytes[i]);
  if (l.first) c.first = std::make_shared<const Linear>(CopyBuffers(*l.first));
  return c;
}

}  // namespace

Linear OwnMappedBuffers(const Linear& l) {
  return AllBuffersMapped(l) ? CopyBuffers(l) : l;
}

namespace {

// n elements, 64-byte aligned (new[] / std::vector give 16): the dense kernels' 64-byte loads
// then never straddle two cache lines (Llama-3.2-1B bf16 decode from 16-byte aligned rows
// 18.9-19.6 tok/s, from 64-byte aligned ones 23.6-25.8; docs/BENCHMARKS.md session 10).
template <typename T>
std::shared_ptr<T> AlignedArray(size_t n) {
  const size_t bytes = std::max<size_t>(64, (n * sizeof(T) + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw std::bad_alloc();
  return std::shared_ptr<T>(static_cast<T*>(p), [](T* q) { std::free(q); });
}

}  // namespace

Linear UseCpuKernelLayouts(const Linear& l, const void* source_bytes) {
  Linear out = l;
  if (l.first) {
    out.first = std::make_shared<const Linear>(UseCpuKernelLayouts(*l.first, source_bytes));
  }
  const kernels::WeightFormat& f = l.w.format;
  if (f.layout != 0 || l.w.data == nullptr) return out;
  // int4 group codes in superblock order for the W4A8 kernel (quant.h), or GGUF Q8_0/Q4_0
  // blocks split into codes and scales for the int group kernels (ggml_quant.h).
  const bool gguf = kernels::GgufSplitApplies(f, l.w.cols);
  int64_t cp = 0;
  if (!gguf) {
    if (!kernels::Quant4UsesSuperblocks(f)) return out;
    cp = kernels::QuantPaddedCols(f, l.w.cols);
    if (cp < kernels::kA8Superblock) return out;
  }
  const auto* src = static_cast<const uint8_t*>(l.w.data);
  uint8_t* dst;
  if (src == source_bytes || MmapFile::IsMapped(src, l.w.data_bytes)) {
    // The tensor's own bytes, or the file's (--mmap-weights): never written; the rewritten
    // codes are a copy.
    std::shared_ptr<uint8_t> buf = AlignedArray<uint8_t>(l.w.data_bytes);
    dst = buf.get();
    out.w.data = dst;
    out.storage.push_back(std::move(buf));
  } else {
    // Bytes this Linear owns (a pack, or a copy out of the file), not yet shared with anything.
    dst = const_cast<uint8_t*>(src);
  }
  if (gguf) {
    kernels::GgufToSplit(f, src, dst, l.w.rows, l.w.cols);
    out.w.format.layout = kernels::kLayoutGgufSplit;
  } else {
    kernels::PermuteQuant4Superblocks(src, dst, 0, l.w.rows, cp, true);
    out.w.format.layout = kernels::kLayoutA8Superblock;
  }
  return out;
}

absl::StatusOr<Linear> MakeDenseLinear(const TensorView& t, DType target) {
  if (t.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, " is not a matrix"));
  }
  Linear l;
  l.w.rows = t.shape[0];
  l.w.cols = t.shape[1];
  l.w.format.kind = kernels::WeightKind::kDense;
  const bool plain_ok = t.storage == StorageType::kPlain &&
                        (t.dtype == DType::kF32 || t.dtype == DType::kF16 ||
                         t.dtype == DType::kBF16);
  if (plain_ok && t.dtype == target) {
    if (kernels::DenseBytes(t.dtype, l.w.rows, l.w.cols) > t.bytes) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, ": data shorter than shape"));
    }
    l.w.format.dtype = t.dtype;
    l.w.data = t.data;
    l.w.data_bytes = t.bytes;
    l.storage.push_back(t.owner);
    l.format_name = DenseName(t.dtype);
    return l;
  }
  l.w.format.dtype = target;
  l.format_name = DenseName(target);
  if (plain_ok && target != DType::kF32) {
    // 16-bit target from another plain dtype: converted a chunk at a time, so a load holds
    // the source and the result of one tensor, not an fp32 copy of it as well (Llama-3.2-1B
    // bf16 -> f16: peak RSS 4.15 -> 3.1 GB, docs/BENCHMARKS.md session 10).
    const int64_t n = t.numel();
    if (kernels::DenseBytes(t.dtype, l.w.rows, l.w.cols) > t.bytes) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, ": data shorter than shape"));
    }
    std::shared_ptr<uint16_t> buf = AlignedArray<uint16_t>(static_cast<size_t>(n));
    constexpr int64_t kChunk = 1 << 14;
    std::vector<float> f(static_cast<size_t>(std::min<int64_t>(n, kChunk)));
    const size_t esize = kernels::DTypeSize(t.dtype);
    for (int64_t b = 0; b < n; b += kChunk) {
      const int64_t m = std::min<int64_t>(kChunk, n - b);
      PlainToF32(t.dtype, static_cast<const uint8_t*>(t.data) + static_cast<size_t>(b) * esize,
                 m, f.data());
      uint16_t* o = buf.get() + b;
      for (int64_t i = 0; i < m; ++i) {
        o[i] = target == DType::kBF16 ? kernels::F32ToBF16(f[i]) : kernels::F32ToF16(f[i]);
      }
    }
    l.w.data = buf.get();
    l.w.data_bytes = static_cast<size_t>(n) * 2;
    l.storage.push_back(std::shared_ptr<const void>(buf, buf.get()));
    return l;
  }
  ASSIGN_OR_RETURN(std::vector<float> f, TensorToF32(t));
  const size_t n = f.size();
  if (target == DType::kF32) {
    std::shared_ptr<float> buf = AlignedArray<float>(n);
    std::memcpy(buf.get(), f.data(), n * sizeof(float));
    l.w.data = buf.get();
    l.w.data_bytes = n * 4;
    l.storage.push_back(std::shared_ptr<const void>(buf, buf.get()));
  } else {
    std::shared_ptr<uint16_t> buf = AlignedArray<uint16_t>(n);
    for (size_t i = 0; i < n; ++i) {
      buf.get()[i] = target == DType::kBF16 ? kernels::F32ToBF16(f[i]) : kernels::F32ToF16(f[i]);
    }
    l.w.data = buf.get();
    l.w.data_bytes = n * 2;
    l.storage.push_back(std::shared_ptr<const void>(buf, buf.get()));
  }
  return l;
}

namespace {

// The calling thread's activation cache for the A8 kernels (kernels/gemm.h), filled once per
// input and shared by every thread and every linear over that input; empty when the format
// quantizes nothing. Fills over tokens run on the pool when there are enough of them.
kernels::ActCache& PrepareActs(const kernels::PackedWeight& w, const float* x, int64_t n,
                               ThreadPool& pool) {
  thread_local kernels::ActCache acts;
  // The workers fill this thread's cache: inside the lambda `acts` would name each worker's
  // own thread_local, so they get a pointer.
  kernels::ActCache* const cache = &acts;
  if (kernels::ActCacheReserve(w, x, n, cache)) {
    pool.ParallelFor(n, 1, [cache](int64_t b, int64_t e) { kernels::ActCacheFill(b, e, cache); },
                     int64_t{16} * w.cols);
  }
  return acts;
}

}  // namespace

void LinearForwardMany(const std::vector<const Linear*>& ls, const float* x, int64_t n,
                       const std::vector<float*>& outputs, ThreadPool& pool) {
  // One dispatch over the concatenated row space of all linears (they share the input).
  // Two-GEMM formats (low-rank) need their intermediate: run those one by one.
  for (const Linear* l : ls) {
    if (l->first) {
      thread_local std::vector<float> scratch;
      for (size_t i = 0; i < ls.size(); ++i) {
        LinearForward(*ls[i], x, n, outputs[i], ls[i]->rows(), pool, &scratch);
      }
      return;
    }
  }
  std::vector<int64_t> offsets(ls.size() + 1, 0);
  int64_t align = 1;
  for (size_t i = 0; i < ls.size(); ++i) {
    offsets[i + 1] = offsets[i] + ls[i]->rows();
    align = std::max(align, kernels::GemmRowAlign(ls[i]->w.format));
  }
  kernels::ActCache& acts = PrepareActs(ls[0]->w, x, n, pool);
  // Rows per chunk must respect each linear's alignment: split per linear boundary.
  pool.ParallelFor(offsets.back(), align, [&](int64_t b, int64_t e) {
    for (size_t i = 0; i < ls.size(); ++i) {
      const int64_t lb = std::max(b, offsets[i]), le = std::min(e, offsets[i + 1]);
      if (lb >= le) continue;
      const Linear& l = *ls[i];
      kernels::Gemm(l.w, x, n, outputs[i], l.rows(), lb - offsets[i], le - offsets[i], &acts);
    }
  }, n * ls[0]->cols());
  acts.Clear();
  for (size_t i = 0; i < ls.size(); ++i) {
    const Linear& l = *ls[i];
    if (l.bias.empty()) continue;
    for (int64_t t = 0; t < n; ++t) {
      float* y = outputs[i] + t * l.rows();
      for (int64_t r = 0; r < l.rows(); ++r) y[r] += l.bias[r];
    }
  }
}

void LinearForward(const Linear& l, const float* x, int64_t n, float* y, int64_t ldy,
                   ThreadPool& pool, std::vector<float>* scratch) {
  const float* in = x;
  if (l.first) {
    const Linear& v = *l.first;
    scratch->resize(static_cast<size_t>(n * v.rows()));
    LinearForward(v, x, n, scratch->data(), v.rows(), pool, nullptr);
    in = scratch->data();
  }
  const int64_t align = kernels::GemmRowAlign(l.w.format);
  kernels::ActCache& acts = PrepareActs(l.w, in, n, pool);
  pool.ParallelFor(l.rows(), align, [&](int64_t b, int64_t e) {
    kernels::Gemm(l.w, in, n, y, ldy, b, e, &acts);
  }, n * l.w.cols);
  acts.Clear();
  if (!l.bias.empty()) {
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t r = 0; r < l.rows(); ++r) y[t * ldy + r] += l.bias[r];
    }
  }
}

}  // namespace compressd
