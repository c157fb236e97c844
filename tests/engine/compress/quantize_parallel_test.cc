// Packing a layer in row blocks (streamed: each block converted to fp32 on its own) on one
// or several threads gives the same bytes as one pack over the whole fp32 matrix, for fp32
// and bf16 sources, group and per-row int8 formats, ragged row counts and padded columns.
#include <memory>
#include <random>
#include <vector>

#include "engine/compress/linear.h"
#include "engine/compress/quantize.h"
#include "gtest/gtest.h"
#include "kernels/quant.h"
#include "kernels/types.h"

namespace compressd {
namespace {

TensorView RandomTensor(int64_t rows, int64_t cols, uint32_t seed, DType dtype) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 0.05f);
  TensorView t;
  t.name = "w";
  t.dtype = dtype;
  t.shape = {rows, cols};
  if (dtype == DType::kBF16) {
    auto v = std::make_shared<std::vector<uint16_t>>(static_cast<size_t>(rows * cols));
    for (auto& x : *v) x = kernels::F32ToBF16(n(rng));
    t.data = v->data();
    t.bytes = v->size() * 2;
    t.owner = v;
  } else {
    auto v = std::make_shared<std::vector<float>>(static_cast<size_t>(rows * cols));
    for (auto& x : *v) x = n(rng);
    t.data = v->data();
    t.bytes = v->size() * 4;
    t.owner = v;
  }
  return t;
}

std::vector<uint8_t> Bytes(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  return std::vector<uint8_t>(b, b + n);
}

void ExpectSameBytes(const kernels::PackedWeight& a, const kernels::PackedWeight& b,
                     const std::string& what) {
  ASSERT_EQ(a.rows, b.rows) << what;
  ASSERT_EQ(a.data_bytes, b.data_bytes) << what;
  EXPECT_EQ(Bytes(a.data, a.data_bytes), Bytes(b.data, b.data_bytes)) << what;
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(a.aux_bytes[i], b.aux_bytes[i]) << what << " aux " << i;
    EXPECT_EQ(Bytes(a.aux[i], a.aux_bytes[i]), Bytes(b.aux[i], b.aux_bytes[i]))
        << what << " aux " << i;
  }
}

TEST(QuantizeParallel, RowBlocksGiveTheSameBytesAsOnePack) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (const char* name : {"int4-g128", "int3-g64", "int2-g32", "int8-g128", "int8", "w8a8"}) {
      // 7300 x 576: two blocks of <= 4M values even on one thread.
      for (int64_t rows : {1, 63, 257, 7300}) {
        const TensorView t = RandomTensor(rows, 576, static_cast<uint32_t>(rows), dtype);
        auto spec = ParseQuantFormat(name);
        ASSERT_TRUE(spec.ok()) << spec.status();
        auto w = TensorToF32(t);
        ASSERT_TRUE(w.ok());
        const kernels::PackedQuant ref =
            spec->bits == 8 && std::string(name).find("-g") == std::string::npos
                ? kernels::PackInt8Rows(w->data(), rows, 576, std::string(name) == "w8a8")
                : kernels::PackGroup(w->data(), rows, 576, spec->bits, spec->group_size);
        for (int threads : {1, 7}) {
          QuantizeOptions opt;
          opt.threads = threads;
          auto q = QuantizeLinear(t, *spec, nullptr, opt);
          ASSERT_TRUE(q.ok()) << q.status();
          ExpectSameBytes(q->w, ref.view,
                          std::string(name) + " rows " + std::to_string(rows) + " threads " +
                              std::to_string(threads) + (dtype == DType::kBF16 ? " bf16" : " f32"));
        }
      }
    }
  }
}

}  // namespace
}  // namespace compressd
