#include "loadtest/arrivals.h"

#include <cmath>
#include <random>

namespace compressd::loadtest {

std::vector<double> OpenLoopArrivals(int n, const ArrivalConfig& config) {
  std::vector<double> times(n > 0 ? n : 0, 0.0);
  if (n <= 0 || !(config.rate > 0) || std::isinf(config.rate)) return times;
  const double shape = config.burstiness > 0 ? config.burstiness : 1.0;
  std::mt19937_64 rng(config.seed);
  std::gamma_distribution<double> gap(shape, 1.0 / (config.rate * shape));
  // The first request goes out at t = 0 so a run does not start with an idle gap.
  double t = 0;
  for (int i = 1; i < n; ++i) {
    t += gap(rng);
    times[i] = t;
  }
  return times;
}

}  // namespace compressd::loadtest
