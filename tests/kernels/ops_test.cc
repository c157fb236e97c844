// Parity of the AVX2 and AVX-512 element-wise ops with their scalar references, on lengths
// around every vector width (tails), with aliasing where ops.h allows it, plus the accuracy
// of the vector exp that SiluMul and SoftmaxInPlace are built on.
#include "kernels/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"

namespace compressd::kernels {


namespace {

struct Ops {
  std::string name;
  bool available;
  void (*rms_norm)(const float*, const float*, int64_t, float, float*);
  void (*silu_mul)(const float*, const float*, float*, int64_t);
  void (*add_in_place)(float*, const float*, int64_t);
  void (*softmax)(float*, int64_t);
  float (*dot)(const float*, const float*, int64_t);
  void (*rope)(float*, int, int, const float*, const float*);
  void (*exp)(const float*, float*, int64_t);
};

std::vector<Ops> Paths() {
  const CpuFeatures& f = GetCpuFeatures();
  const bool avx2 = f.avx2 && f.fma && f.f16c;
  const bool avx512 = avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  return {
      {"avx2", avx2, &RmsNormAvx2, &SiluMulAvx2, &AddInPlaceAvx2, &SoftmaxInPlaceAvx2, &DotAvx2,
       &RopeRotateHalfAvx2, &ExpAvx2},
      {"avx512", avx512, &RmsNormAvx512, &SiluMulAvx512, &AddInPlaceAvx512, &SoftmaxInPlaceAvx512,
       &DotAvx512, &RopeRotateHalfAvx512, &ExpAvx512},
  };
}

const int64_t kLengths[] = {1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 172, 576, 2048 + 5};

std::vector<float> Random(int64_t n, float lo, float hi, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, double rel,
                double abs, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  int failures = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!(std::fabs(got[i] - want[i]) <= rel * std::fabs(want[i]) + abs) && ++failures <= 5) {
      ADD_FAILURE() << what << " [" << i << "] got " << got[i] << " want " << want[i];
    }
  }
}

#define SKIP_IF_UNAVAILABLE(p)                                        \
  if (!(p).available) {                                               \
    std::printf("[ SKIPPED  ] %s: CPU lacks it\n", (p).name.c_str()); \
    continue;                                                         \
  }

TEST(OpsTest, RmsNormMatchesReference) {
  std::mt19937 rng(1);
  for (const Ops& p : Paths()) {
    SKIP_IF_UNAVAILABLE(p);
    for (int64_t n : kLengths) {
      const std::vector<float> x = Random(n, -3, 3, rng), w = Random(n, 0.5f, 1.5f, rng);
      std::vector<float> want(x.size()), got(x.size());
      RmsNormRef(x.data(), w.data(), n, 1e-5f, want.data());
      p.rms_norm(x.data(), w.data(), n, 1e-5f, got.data());
      ExpectNear(got, want, 2e-6, 1e-30, p.name + " n=" + std::to_string(n));
      std::vector<float> inplace = x;  // out may alias x
      p.rms_norm(inplace.data(), w.data(), n, 1e-5f, inplace.data());
      ExpectNear(inplace, want, 2e-6, 1e-30, p.name + " in place n=" + std::to_string(n));
    }
  }
}

TEST(OpsTest, SiluMulMatchesReference) {
  std::mt19937 rng(2);
  for (const Ops& p : Paths()) {
    SKIP_IF_UNAVAILABLE(p);
    for (int64_t n : kLengths) {
      std::vector<float> g = Random(n, -30, 30, rng), u = Random(n, -2, 2, rng);
      if (n > 4) g[0] = -100.0f, g[1] = 100.0f, g[2] = 0.0f, g[3] = -87.5f;
      std::vector<float> want(g.size()), got(g.size());
      SiluMulRef(g.data(), u.data(), want.data(), n);
      p.silu_mul(g.data(), u.data(), got.data(), n);
      ExpectNear(got, want, 2e-6, 1e-37, p.name + " n=" + std::to_string(n));
      std::vector<float> alias_gate = g, alias_up = u;  // out may alias gate or up
      p.silu_mul(alias_gate.data(), u.data(), alias_gate.data(), n);
      p.silu_mul(g.data(), alias_up.data(), alias_up.data(), n);
      ExpectNear(alias_gate, want, 2e-6, 1e-37, p.name + " alias gate");
      ExpectNear(alias_up, want, 2e-6, 1e-37, p.name + " alias up");
    }
  }
}

// The vector exp against std::exp (in double) across [-88, 88]: relative error < 1e-6,
// including the subnormal results below e^-87.3.
TEST(OpsTest, ExpRelativeErrorBelowOneInAMillion) {
  const int64_t kPoints = 1 << 21;
  std::vector<float> x(kPoints), y(kPoints);
  for (int64_t i = 0; i < kPoints; ++i) x[i] = -88.0f + 176.0f * i / (kPoints - 1);
  for (const Ops& p : Paths()) {
    SKIP_IF_UNAVAILABLE(p);
    p.exp(x.data(), y.data(), kPoints);
    double worst = 0.0;
    float worst_x = 0.0f;
    for (int64_t i = 0; i < kPoints; ++i) {
      const double want = std::exp(static_cast<double>(x[i]));
      const double rel = std::fabs(y[i] - want) / want;
      if (rel > worst) worst = rel, worst_x = x[i];
    }
    EXPECT_LT(worst, 1e-6) << p.name << " at x=" << worst_x;
    std::printf("%s exp: max relative error %.3g at x=%g\n", p.name.c_str(), worst, worst_x);
    const float edge[] = {0.0f, -std::numeric_limits<float>::infinity(), -200.0f, 1e-8f};
    float out[4];
    p.exp(edge, out, 4);
    EXPECT_EQ(out[0], 1.0f) << p.name;
    EXPECT_EQ(out[1], 0.0f) << p.name;
    EXPECT_EQ(out[2], 0.0f) << p.name;
    EXPECT_EQ(out[3], 1.0f) << p.name;
  }
}

TEST(OpsTest, AddInPlaceIsExact) {
  std::mt19937 rng(3);
  for (const Ops& p : Paths()) {
    SKIP_IF_UNAVAILABLE(p);
    for (int64_t n : kLengths) {
      const std::vector<float> x = Random(n, -5, 5, rng), y0 = Random(n, -5, 5, rng);
      std::vector<float> want = y0, got = y0;
      AddInPlaceRef(want.data(), x.data(), n);
      p.add_in_place(got.data(), x.data(), n);
      EXPECT_EQ(got, want) << p.name << " n=" << n;
    }
  }
}

TEST(OpsTest, DotMatchesReference) {
  std::mt19937 rng(4);
  for (const Ops& p : Paths()) {
    SKIP_IF_UNAVAILABLE(p);
    for (int64_t n : kLengths) {
      const std::vector<float> a = Random(n, -1, 1, rng), b = Random(n, -1, 1, rng);
      double exact = 0.0, mag = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        exact += static_cast<double>(a[i]) * b[i];
        mag += std::fabs(static_cast<double>(a[i]) * b[i]);
      }
      EXPECT_NEAR(p.dot(a.data(), b.data(), n), exact, 1e-5 * mag) << p.name << " n=" << n;
      EXPECT_NEAR(DotRef(a.data(), b.data(), n), exact, 1e-5 * mag) << "ref n=" << n;
    }
  }
}

TEST(OpsTest, SoftmaxMatchesReference) {
  std::mt19937 rng(5);
  const float inf = std::numeric_limits<float>::infinity();
  for (const Ops& p : Paths()) {
    SKIP_IF_UNAVAILABLE(p);
    for (int64_t n : kLengths) {
      std::vector<float> x = Random(n, -20, 20, rng);
      for (int64_t i = 1; i < n; i += 3) x[i] = -inf;  // masked positions
      std::vector<float> want = x, got = x;
      SoftmaxInPlaceRef(want.data(), n);
      p.softmax(got.data(), n);
      ExpectNear(got, want, 1e-5, 1e-9, p.name + " n=" + std::to_string(n));
      double sum = 0.0;
      for (float v : got) sum += v;
      EXPECT_NEAR(sum, 1.0, 1e-5) << p.name;
      std::vector<float> all_masked(static_cast<size_t>(n), -inf);  // uniform, like the ref
      p.softmax(all_masked.data(), n);
      for (float v : all_masked) ASSERT_FLOAT_EQ(v, 1.0f / n) << p.name;
    }
  }
}

TEST(OpsTest, RopeRotateHalfMatchesReference) {
  std::mt19937 rng(6);
  for (const Ops& p : Paths()) {
    SKIP_IF_UNAVAILABLE(p);
    for (int head_dim : {2, 8, 10, 34, 64, 80, 128, 256}) {
      const int n_heads = 3;
      const std::vector<float> v = Random(n_heads * head_dim, -2, 2, rng);
      std::vector<float> cs(head_dim / 2), sn(head_dim / 2);
      for (int i = 0; i < head_dim / 2; ++i) {
        const float angle = 0.37f * (i + 1);
        cs[i] = std::cos(angle);
        sn[i] = std::sin(angle);
      }
      std::vector<float> want = v, got = v;
      RopeRotateHalfRef(want.data(), n_heads, head_dim, cs.data(), sn.data());
      p.rope(got.data(), n_heads, head_dim, cs.data(), sn.data());
      ExpectNear(got, want, 1e-6, 1e-6, p.name + " head_dim=" + std::to_string(head_dim));
    }
  }
}

// The entry points of ops.h follow the ISA cap and agree with the references under each.
TEST(OpsTest, DispatchUnderEveryIsaCap) {
  std::mt19937 rng(7);
  const int64_t n = 77;
  const std::vector<float> x = Random(n, -4, 4, rng), w = Random(n, -1, 1, rng);
  for (CpuIsa cap : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    SetIsaCap(cap);
    const std::string what = IsaName(ActiveIsa());
    std::vector<float> want(n), got(n);
    RmsNormRef(x.data(), w.data(), n, 1e-6f, want.data());
    RmsNorm(x.data(), w.data(), n, 1e-6f, got.data());
    ExpectNear(got, want, 2e-6, 1e-30, what + " RmsNorm");
    SiluMulRef(x.data(), w.data(), want.data(), n);
    SiluMul(x.data(), w.data(), got.data(), n);
    ExpectNear(got, want, 2e-6, 1e-37, what + " SiluMul");
    want = x;
    got = x;
    SoftmaxInPlaceRef(want.data(), n);
    SoftmaxInPlace(got.data(), n);
    ExpectNear(got, want, 1e-5, 1e-9, what + " Softmax");
    want = x;
    got = x;
    AddInPlaceRef(want.data(), w.data(), n);
    AddInPlace(got.data(), w.data(), n);
    EXPECT_EQ(got, want) << what;
    EXPECT_NEAR(Dot(x.data(), w.data(), n), DotRef(x.data(), w.data(), n), 1e-4) << what;
    want = x;
    got = x;
    RopeRotateHalfRef(want.data(), 1, 76, w.data(), w.data() + 38);
    RopeRotateHalf(got.data(), 1, 76, w.data(), w.data() + 38);
    ExpectNear(got, want, 1e-6, 1e-5, what + " Rope");
  }
  SetIsaCap(CpuIsa::kAvx512);
}

}  // namespace
}  // namespace compressd::kernels
