// Exactness of the F16/BF16 conversions in types.h over all 65536 bit patterns, and of the
// vector conversions the dense GEMM kernels use (vcvtph2ps, the BF16 shift) against them.
#include "kernels/types.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/gemm.h"

namespace compressd::kernels {
namespace {

// The value a half encodes, computed independently of types.h.
double HalfValue(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int man = h & 0x3ff;
  if (exp == 0) return sign * std::ldexp(static_cast<double>(man), -24);
  if (exp == 31) return man ? NAN : sign * INFINITY;
  return sign * std::ldexp(static_cast<double>(1024 + man), exp - 25);
}

TEST(TypesTest, F16ToF32IsExactForEveryPattern) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    const float f = F16ToF32(h);
    const double want = HalfValue(h);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << i;
    } else {
      ASSERT_EQ(static_cast<double>(f), want) << std::hex << i;
      ASSERT_EQ(std::signbit(f), (h >> 15) != 0) << std::hex << i;  // -0 stays -0
    }
  }
}

TEST(TypesTest, F16RoundTripAndRoundToNearestEven) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    const float f = F16ToF32(h);
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(F16ToF32(F32ToF16(f)))) << std::hex << i;
      continue;
    }
    ASSERT_EQ(F32ToF16(f), h) << std::hex << i;
    // The midpoint to the next half up in magnitude rounds to the even one of the two.
    const uint16_t next = static_cast<uint16_t>(h + 1);
    if ((h & 0x7fff) >= 0x7bff) continue;  // largest finite or inf: no next finite half
    const double mid = (HalfValue(h) + HalfValue(next)) / 2.0;
    const float midf = static_cast<float>(mid);
    ASSERT_EQ(static_cast<double>(midf), mid);  // representable in float
    ASSERT_EQ(F32ToF16(midf), (h & 1) ? next : h) << std::hex << i;
    // Just above / below the midpoint goes to the nearer one.
    ASSERT_EQ(F32ToF16(std::nextafter(midf, 2 * midf)), next) << std::hex << i;
    if (midf != 0.0f) {
      ASSERT_EQ(F32ToF16(std::nextafter(midf, 0.0f)), h) << std::hex << i;
    }
  }
  EXPECT_EQ(F32ToF16(65520.0f), 0x7c00);  // overflow to inf
  EXPECT_EQ(F32ToF16(65519.99f), 0x7bff);
  EXPECT_EQ(F32ToF16(-1e-10f), 0x8000);  // underflow keeps the sign
}

TEST(TypesTest, BF16RoundTripAndRoundToNearestEven) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t b = static_cast<uint16_t>(i);
    const float f = BF16ToF32(b);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    ASSERT_EQ(bits, i << 16);  // the definition: a 16-bit shift
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(BF16ToF32(F32ToBF16(f)))) << std::hex << i;
      continue;
    }
    ASSERT_EQ(F32ToBF16(f), b) << std::hex << i;
    if ((b & 0x7fff) >= 0x7f7f) continue;
    const uint32_t mid_bits = (i << 16) | 0x8000u;  // exactly halfway to the next bf16
    float mid;
    std::memcpy(&mid, &mid_bits, 4);
    ASSERT_EQ(F32ToBF16(mid), (b & 1) ? b + 1 : b) << std::hex << i;
    const uint32_t above = mid_bits + 1, below = mid_bits - 1;
    float fa, fb;
    std::memcpy(&fa, &above, 4);
    std::memcpy(&fb, &below, 4);
    ASSERT_EQ(F32ToBF16(fa), b + 1) << std::hex << i;
    ASSERT_EQ(F32ToBF16(fb), b) << std::hex << i;
  }
}

// Every F16 / BF16 pattern decoded by the vector GEMM paths (a [65536 x 1] weight times 1.0)
// equals the scalar definition; subnormals, infinities and NaNs included (BF16 subnormals are
// zero on the vdpbf16ps path, by its definition).
TEST(TypesTest, VectorGemmDecodesEveryPatternExactly) {
  const CpuFeatures& f = GetCpuFeatures();
  const bool avx2 = f.avx2 && f.fma && f.f16c;
  const bool avx512 = avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  std::vector<uint16_t> bits(65536);
  for (uint32_t i = 0; i < 65536; ++i) bits[i] = static_cast<uint16_t>(i);
  const float one = 1.0f;
  std::vector<float> y(65536);
  for (DType dt : {DType::kF16, DType::kBF16}) {
    PackedWeight w;
    w.format.dtype = dt;
    w.rows = 65536;
    w.cols = 1;
    w.data = bits.data();
    w.data_bytes = bits.size() * 2;
    for (auto [name, fn, ok] : {std::tuple{"avx2", &GemmDenseAvx2, avx2},
                                std::tuple{"avx512", &GemmDenseAvx512, avx512}}) {
      if (!ok) continue;
      fn(w, &one, 1, y.data(), 65536, 0, 65536);
      for (uint32_t i = 0; i < 65536; ++i) {
        float want = dt == DType::kF16 ? F16ToF32(bits[i]) : BF16ToF32(bits[i]);
        // vdpbf16ps (the AVX-512 BF16 path, gemm.h) treats subnormal inputs as zero.
        if (dt == DType::kBF16 && fn == &GemmDenseAvx512 && f.avx512bf16 &&
            std::fpclassify(want) == FP_SUBNORMAL) {
          want = 0.0f;
        }
        if (std::isnan(want)) {
          ASSERT_TRUE(std::isnan(y[i])) << name << " " << std::hex << i;
        } else {
          ASSERT_EQ(y[i], want) << name << " " << DTypeName(dt) << " " << std::hex << i;
        }
      }
    }
  }
}

TEST(TypesTest, DTypeSizesAndNames) {
  EXPECT_EQ(DTypeSize(DType::kF32), 4);
  EXPECT_EQ(DTypeSize(DType::kF16), 2);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2);
  EXPECT_STREQ(DTypeName(DType::kBF16), "BF16");
  EXPECT_EQ(DenseBytes(DType::kF16, 3, 5), 30u);
}

}  // namespace
}  // namespace compressd::kernels
