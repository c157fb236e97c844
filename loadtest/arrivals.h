// Arrival processes. Open loop: request send times are fixed in advance and do not depend on
// how fast the server answers (a gamma renewal process; shape 1 is Poisson). Closed loop: a
// fixed number of requests is kept in flight. Pure and deterministic for a given seed.
#pragma once

#include <cstdint>
#include <vector>

namespace compressd::loadtest {

struct ArrivalConfig {
  // Mean requests per second. <= 0 or infinity: every request is sent at time 0.
  double rate = 0;
  // Gamma shape of the inter-arrival times: 1 = Poisson, < 1 burstier, > 1 more regular.
  double burstiness = 1.0;
  uint64_t seed = 0;
};

// Send times in seconds from the start of the run, non-decreasing, n entries. Inter-arrival
// gaps are Gamma(shape = burstiness, scale = 1 / (rate * burstiness)) so the mean gap is
// 1 / rate whatever the shape.
std::vector<double> OpenLoopArrivals(int n, const ArrivalConfig& config);

// Closed loop has no schedule: the runner starts a request whenever fewer than `concurrency`
// are in flight. This helper answers how many to start now.
inline int ClosedLoopToStart(int concurrency, int in_flight, int remaining) {
  int free_slots = concurrency - in_flight;
  if (free_slots < 0) free_slots = 0;
  return free_slots < remaining ? free_slots : remaining;
}

}  // namespace compressd::loadtest
