#include "loadtest/arrivals.h"

#include <cmath>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"

namespace compressd::loadtest {
namespace {

std::vector<double> Gaps(const std::vector<double>& t) {
  std::vector<double> g;
  for (size_t i = 1; i < t.size(); ++i) g.push_back(t[i] - t[i - 1]);
  return g;
}

double Mean(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

double CoefficientOfVariation(const std::vector<double>& v) {
  const double m = Mean(v);
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  return std::sqrt(ss / static_cast<double>(v.size())) / m;
}

TEST(OpenLoopArrivalsTest, InfiniteOrZeroRateSendsEverythingAtOnce) {
  for (double rate : {0.0, static_cast<double>(INFINITY)}) {
    std::vector<double> t = OpenLoopArrivals(5, {rate, 1.0, 7});
    ASSERT_EQ(t.size(), 5u);
    for (double x : t) EXPECT_EQ(x, 0.0);
  }
}

TEST(OpenLoopArrivalsTest, StartsAtZeroAndNeverGoesBack) {
  std::vector<double> t = OpenLoopArrivals(1000, {10.0, 0.5, 1});
  EXPECT_EQ(t[0], 0.0);
  for (size_t i = 1; i < t.size(); ++i) EXPECT_GE(t[i], t[i - 1]);
}

TEST(OpenLoopArrivalsTest, MeanGapIsOneOverRateForEveryShape) {
  for (double shape : {0.25, 1.0, 4.0}) {
    std::vector<double> g = Gaps(OpenLoopArrivals(40001, {8.0, shape, 3}));
    EXPECT_NEAR(Mean(g), 1.0 / 8.0, 0.125 * 0.05) << "shape " << shape;
  }
}

TEST(OpenLoopArrivalsTest, BurstinessSetsTheSpreadOfGaps) {
  // A gamma distribution of shape k has coefficient of variation 1/sqrt(k): Poisson (k=1)
  // gives 1, burstier traffic more, smoother traffic less.
  for (double shape : {0.25, 1.0, 4.0}) {
    std::vector<double> g = Gaps(OpenLoopArrivals(40001, {5.0, shape, 11}));
    EXPECT_NEAR(CoefficientOfVariation(g), 1.0 / std::sqrt(shape), 0.05) << "shape " << shape;
  }
}

TEST(OpenLoopArrivalsTest, SameSeedSameScheduleOtherSeedOtherSchedule) {
  EXPECT_EQ(OpenLoopArrivals(50, {3.0, 1.0, 42}), OpenLoopArrivals(50, {3.0, 1.0, 42}));
  EXPECT_NE(OpenLoopArrivals(50, {3.0, 1.0, 42}), OpenLoopArrivals(50, {3.0, 1.0, 43}));
}

TEST(OpenLoopArrivalsTest, EmptyForNonPositiveCount) {
  EXPECT_TRUE(OpenLoopArrivals(0, {1.0, 1.0, 0}).empty());
  EXPECT_TRUE(OpenLoopArrivals(-3, {1.0, 1.0, 0}).empty());
}

TEST(ClosedLoopTest, FillsFreeSlotsUpToWhatRemains) {
  EXPECT_EQ(ClosedLoopToStart(4, 0, 100), 4);
  EXPECT_EQ(ClosedLoopToStart(4, 3, 100), 1);
  EXPECT_EQ(ClosedLoopToStart(4, 4, 100), 0);
  EXPECT_EQ(ClosedLoopToStart(4, 1, 2), 2);
  EXPECT_EQ(ClosedLoopToStart(4, 6, 2), 0);
}

}  // namespace
}  // namespace compressd::loadtest
