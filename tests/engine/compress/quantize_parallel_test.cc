// Packing a layer in row blocks on several threads gives the same bytes as one pack over
// all rows (group formats, ragged row counts and padded columns included).
#include <memory>
#include <random>
#include <vector>

#include "engine/compress/quantize.h"
#include "gtest/gtest.h"

namespace compressd {
namespace {

TensorView RandomTensor(int64_t rows, int64_t cols, uint32_t seed) {
  auto v = std::make_shared<std::vector<float>>(static_cast<size_t>(rows * cols));
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 0.05f);
  for (auto& x : *v) x = n(rng);
  TensorView t;
  t.name = "w";
  t.dtype = DType::kF32;
  t.shape = {rows, cols};
  t.data = v->data();
  t.bytes = v->size() * sizeof(float);
  t.owner = v;
  return t;
}

std::vector<uint8_t> Bytes(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  return std::vector<uint8_t>(b, b + n);
}

TEST(QuantizeParallel, RowBlocksGiveTheSameBytesAsOnePack) {
  for (const char* name : {"int4-g128", "int3-g64", "int2-g32", "int8-g128", "int8", "w8a8"}) {
    for (int64_t rows : {1, 63, 64, 257, 1000}) {
      const TensorView t = RandomTensor(rows, 576, static_cast<uint32_t>(rows));
      auto spec = ParseQuantFormat(name);
      ASSERT_TRUE(spec.ok()) << spec.status();
      QuantizeOptions one, many;
      one.threads = 1;
      many.threads = 7;
      auto a = QuantizeLinear(t, *spec, nullptr, one);
      auto b = QuantizeLinear(t, *spec, nullptr, many);
      ASSERT_TRUE(a.ok() && b.ok()) << name;
      ASSERT_EQ(a->w.rows, rows);
      ASSERT_EQ(b->w.rows, rows);
      ASSERT_EQ(a->w.data_bytes, b->w.data_bytes) << name << " rows " << rows;
      EXPECT_EQ(Bytes(a->w.data, a->w.data_bytes), Bytes(b->w.data, b->w.data_bytes))
          << name << " rows " << rows;
      for (int i = 0; i < 4; ++i) {
        ASSERT_EQ(a->w.aux_bytes[i], b->w.aux_bytes[i]) << name;
        EXPECT_EQ(Bytes(a->w.aux[i], a->w.aux_bytes[i]), Bytes(b->w.aux[i], b->w.aux_bytes[i]))
            << name << " rows " << rows << " aux " << i;
      }
    }
  }
}

}  // namespace
}  // namespace compressd
