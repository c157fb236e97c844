// LinearForward / LinearForwardMany over the engine's ThreadPool give exactly the outputs of
// one single-threaded Gemm() per linear, for the formats whose A8 kernels share quantized
// activations across threads and linears (kernels/gemm.h ActCache) and for one that does not;
// and the same input buffer refilled with new values is never answered from stale
// activations. Regression: the shared activations of batches large enough to be quantized on
// both threads were filled into the worker's own thread_local cache, so half of the tokens of
// a 16-token batch read the previous input's activations.
#include "engine/compress/linear.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "engine/core/thread_pool.h"
#include "kernels/gemm.h"
#include "kernels/ggml_quant.h"
#include "kernels/quant.h"
#include "kernels/types.h"

namespace compressd {
namespace {

struct Owned {
  kernels::PackedQuant quant;    // group / int8 formats
  std::vector<uint8_t> blocks;   // GGUF formats
  Linear linear;
};

std::vector<float> Random(int64_t n, std::mt19937& rng, float sd) {
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = nd(rng);
  return v;
}

// `kind`: "int4-g32", "int4-g128", "int8" (per row, fp32-activation path), "gguf-q4_0".
std::unique_ptr<Owned> Make(const std::string& kind, int64_t rows, int64_t cols,
                            std::mt19937& rng) {
  auto o = std::make_unique<Owned>();
  if (kind == "gguf-q4_0") {
    o->linear.w.format = kernels::GgufQ4_0Format();
    o->linear.w.rows = rows;
    o->linear.w.cols = cols;
    const uint64_t bytes = kernels::GgufQuantBytes(o->linear.w.format, rows, cols);
    o->blocks.resize(bytes);
    std::uniform_int_distribution<int> q(0, 255);
    std::uniform_real_distribution<float> d(-0.05f, 0.05f);
    for (int64_t i = 0; i < rows * cols / 32; ++i) {
      auto* blk = reinterpret_cast<kernels::GgufBlockQ4_0*>(o->blocks.data()) + i;
      blk->d = kernels::F32ToF16(d(rng));
      for (int j = 0; j < 16; ++j) blk->qs[j] = static_cast<uint8_t>(q(rng));
    }
    o->linear.w.data = o->blocks.data();
    o->linear.w.data_bytes = bytes;
  } else {
    const std::vector<float> w = Random(rows * cols, rng, 0.05f);
    if (kind == "int8") {
      o->quant = kernels::PackInt8Rows(w.data(), rows, cols, false);
    } else {
      o->quant = kernels::PackGroup(w.data(), rows, cols, 4, kind == "int4-g32" ? 32 : 128);
    }
    o->linear.w = o->quant.view;
  }
  o->linear.format_name = kind;
  return o;
}

std::vector<float> Reference(const Linear& l, const float* x, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n * l.rows()));
  kernels::Gemm(l.w, x, n, y.data(), l.rows(), 0, l.rows());
  return y;
}

TEST(LinearForward, ThreadsAndSharedActivationsMatchOneGemmPerLinear) {
  ThreadPool pool(2);
  std::mt19937 rng(21);
  for (const std::string kind : {"int4-g32", "int4-g128", "int8", "gguf-q4_0"}) {
    const int64_t cols = 576;
    auto q = Make(kind, 192, cols, rng), k = Make(kind, 64, cols, rng),
         v = Make(kind, 64, cols, rng);
    for (int64_t n : {1, 7, 16, 70}) {
      // One input buffer, refilled: a cache keyed on the address alone would go stale.
      std::vector<float> x(static_cast<size_t>(n * cols));
      for (int round = 0; round < 2; ++round) {
        const std::vector<float> fresh = Random(n * cols, rng, 1.0f);
        std::copy(fresh.begin(), fresh.end(), x.begin());
        std::vector<float> yq(static_cast<size_t>(n * 192)), yk(static_cast<size_t>(n * 64)),
            yv(static_cast<size_t>(n * 64));
        LinearForwardMany({&q->linear, &k->linear, &v->linear}, x.data(), n,
                          {yq.data(), yk.data(), yv.data()}, pool);
        EXPECT_EQ(yq, Reference(q->linear, x.data(), n)) << kind << " n=" << n << " q";
        EXPECT_EQ(yk, Reference(k->linear, x.data(), n)) << kind << " n=" << n << " k";
        EXPECT_EQ(yv, Reference(v->linear, x.data(), n)) << kind << " n=" << n << " v";
        std::vector<float> y(static_cast<size_t>(n * 192)), scratch;
        LinearForward(q->linear, x.data(), n, y.data(), 192, pool, &scratch);
        EXPECT_EQ(y, Reference(q->linear, x.data(), n)) << kind << " n=" << n << " single";
      }
    }
  }
}

}  // namespace
}  // namespace compressd
