#include "engine/sched/ladder.h"

namespace compressd {

std::vector<int32_t> PlanBlockMerges(const LadderConfig& cfg, const std::vector<LadderBlock>& table,
                                     int32_t full_blocks, int32_t max_merges) {
  std::vector<int32_t> merges;
  // Logical blocks [sink, cold_end) are cold.
  const int32_t cold_end = full_blocks - cfg.hot_blocks;
  int32_t logical = 0;  // logical index of table[i]
  const int32_t n = static_cast<int32_t>(table.size());
  for (int32_t i = 0; i + 1 < n && static_cast<int32_t>(merges.size()) < max_merges;) {
    const LadderBlock& a = table[i];
    const LadderBlock& b = table[i + 1];
    if (logical + 2 > cold_end) break;
    const bool ok =
        logical >= cfg.sink_blocks && !a.demoted && !b.demoted && !a.shared && !b.shared;
    if (ok) {
      merges.push_back(i);
      logical += 2;
      i += 2;
    } else {
      logical += a.demoted ? 2 : 1;
      i += 1;
    }
  }
  return merges;
}

}  // namespace compressd
