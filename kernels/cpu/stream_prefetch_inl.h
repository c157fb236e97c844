// Software prefetch for decode GEMV tiles (batch 1), shared by the AVX-512 weight kernels.
// Include only from translation units compiled for AVX-512 (or any x86-64: _mm_prefetch is SSE).
//
// Why: a decode tile reads R rows side by side, i.e. R strided streams. When rows are short
// (a 2048-column int4 row is 1 KiB, 16 lines) the hardware prefetchers barely ramp up on a
// stream before it ends, and a per-row "p + distance" prefetch lands in the next row, which
// the current tile is already reading. But the rows of a thread's range lie back to back, so
// the next tile's bytes are one contiguous range that starts where this tile's last row
// ends. NextTilePrefetch walks that range `kLead` bytes ahead, as many lines per tile step as
// the tile itself consumes, so the whole row range becomes one sequential stream whose DRAM
// reads are in flight a tile ahead of the arithmetic.
// Measured (BM_QuantGemm int4 n=1, 2 threads, weights from DRAM, 2026-11-23):
// 8192x2048 24-26 -> 34-54 GB/s, 2048x8192 33-37 -> 32-42 GB/s; Llama-3.2-1B int4 decode
// 42-45 -> 50-62 tok/s (docs/BENCHMARKS.md).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace compressd::kernels {

class NextTilePrefetch {
 public:
  // Lead past the next tile's first byte: the tile ahead (R rows) already gives a distance
  // of R row lengths; 4 KiB more covered the DRAM latency also for 2-row tails.
  static constexpr int64_t kLead = 4096;

  // Tiles larger than this prefetch nothing: their rows are long enough for the hardware
  // prefetchers, and prefetching a whole large tile ahead evicts lines from L1 before they
  // are read (bf16 8-row tiles of 2048-8192 columns, 32-128 KiB: Llama-3.2-1B bf16 decode
  // 16.4-17.8 -> 14.6-14.9 tok/s with it).
  static constexpr int64_t kMaxTileBytes = int64_t{16} << 10;

  NextTilePrefetch() = default;
  // `next`: first byte the next tile reads; `end`: one past the last byte of this thread's
  // range (nothing past it is prefetched); `tile_bytes`: bytes one tile reads.
  // The cursor is an integer: it runs past the range's end, which a pointer may not (and a
  // prefetch of any address is harmless: it never faults).
  NextTilePrefetch(const void* next, const void* end, int64_t tile_bytes)
      : p_(reinterpret_cast<uintptr_t>(next) + kLead), end_(reinterpret_cast<uintptr_t>(end)) {
    if (tile_bytes > kMaxTileBytes) p_ = end_;
  }

  // One tile step that consumed BYTES bytes of weights (summed over the tile's rows).
  template <int64_t BYTES>
  inline void Step() {
    static_assert(BYTES > 0);
    if (p_ >= end_) return;
    if constexpr (BYTES >= 64) {
#pragma GCC unroll 16
      for (int64_t i = 0; i < BYTES; i += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(p_ + i), _MM_HINT_T0);
      }
    } else {
      _mm_prefetch(reinterpret_cast<const char*>(p_), _MM_HINT_T0);
    }
    p_ += BYTES;
  }

 private:
  uintptr_t p_ = 0;
  uintptr_t end_ = 0;
};

}  // namespace compressd::kernels
