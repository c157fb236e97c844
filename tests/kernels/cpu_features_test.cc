// Run-time ISA selection: detection agrees with the compiler's view of the CPU, and the cap
// set by SetIsaCap bounds ActiveIsa() (the mechanism every parity test relies on).
#include "kernels/cpu_features.h"

#include <gtest/gtest.h>

namespace compressd::kernels {
namespace {

TEST(CpuFeaturesTest, DetectionAgreesWithCompilerBuiltins) {
  const CpuFeatures& f = GetCpuFeatures();
  __builtin_cpu_init();
  EXPECT_EQ(f.avx2, static_cast<bool>(__builtin_cpu_supports("avx2")));
  EXPECT_EQ(f.fma, static_cast<bool>(__builtin_cpu_supports("fma")));
  EXPECT_EQ(f.avx512f, static_cast<bool>(__builtin_cpu_supports("avx512f")));
  EXPECT_EQ(f.avx512bw, static_cast<bool>(__builtin_cpu_supports("avx512bw")));
  EXPECT_EQ(f.avx512vl, static_cast<bool>(__builtin_cpu_supports("avx512vl")));
  EXPECT_EQ(f.avx512dq, static_cast<bool>(__builtin_cpu_supports("avx512dq")));
  EXPECT_EQ(f.avx512vnni, static_cast<bool>(__builtin_cpu_supports("avx512vnni")));
  EXPECT_EQ(&f, &GetCpuFeatures());  // detected once
}

TEST(CpuFeaturesTest, CapBoundsActiveIsa) {
  const CpuFeatures& f = GetCpuFeatures();
  SetIsaCap(CpuIsa::kScalar);
  EXPECT_EQ(ActiveIsa(), CpuIsa::kScalar);
  SetIsaCap(CpuIsa::kAvx2);
  EXPECT_EQ(ActiveIsa(), f.avx2 && f.fma && f.f16c ? CpuIsa::kAvx2 : CpuIsa::kScalar);
  SetIsaCap(CpuIsa::kAvx512);
  if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx2 && f.fma && f.f16c) {
    EXPECT_EQ(ActiveIsa(), CpuIsa::kAvx512);
  } else {
    EXPECT_NE(ActiveIsa(), CpuIsa::kAvx512);
  }
  std::printf("active ISA: %s\n", IsaName(ActiveIsa()));
}

TEST(CpuFeaturesTest, IsaNames) {
  EXPECT_STREQ(IsaName(CpuIsa::kScalar), "scalar");
  EXPECT_STREQ(IsaName(CpuIsa::kAvx2), "avx2");
  EXPECT_STREQ(IsaName(CpuIsa::kAvx512), "avx512");
}

}  // namespace
}  // namespace compressd::kernels
