#include "engine/sched/scheduler.h"

#include <algorithm>

namespace compressd {
namespace {

int32_t BlocksFor(int32_t tokens, int32_t bs) { return (tokens + bs - 1) / bs; }

}  // namespace

SchedulePlan Schedule(const SchedulerConfig& cfg, const std::vector<SchedSeq>& running,
                      const std::vector<SchedSeq>& waiting, int64_t free_blocks) {
  SchedulePlan plan;
  int64_t budget = cfg.max_batch_tokens;
  int64_t free = free_blocks;
  const int n = static_cast<int>(running.size());
  std::vector<bool> preempted(n, false);
  std::vector<int> chunk_of(n, -1);  // index into plan.chunks
  int newest = n - 1;                // newest running sequence not yet preempted
  std::vector<int32_t> demote(n, 0);  // merges planned per running sequence

  auto preempt = [&](int i) {
    preempted[i] = true;
    // Its planned demotions were counted as freed already; preemption frees the rest.
    free += running[i].blocks_held - demote[i];
    demote[i] = 0;
    if (chunk_of[i] >= 0) {
      ScheduledChunk& c = plan.chunks[chunk_of[i]];
      budget += c.num_tokens;
      free += c.new_blocks;
      c.num_tokens = 0;  // removed below
    }
    plan.preempted.push_back(running[i].id);
    while (newest >= 0 && preempted[newest]) --newest;
  };

  // Two passes: decodes (one token left to compute), then prefill continuations.
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 0; i < n; ++i) {
      if (preempted[i] || chunk_of[i] >= 0) continue;
      const SchedSeq& s = running[i];
      const int32_t remaining = s.num_tokens - s.num_computed;
      if (remaining <= 0) continue;
      const bool is_decode = remaining == 1;
      if ((pass == 0) != is_decode) continue;
      if (budget <= 0) break;
      const int32_t take = static_cast<int32_t>(std::min<int64_t>(remaining, budget));
      const int32_t need = std::max(
          0, BlocksFor(s.num_computed + take, cfg.block_size) - s.blocks_held - s.demoted_blocks);
      // Ladder step 1: demote, newest sequence first (i itself included).
      for (int j = n - 1; j >= 0 && need > free; --j) {
        if (preempted[j]) continue;
        const int32_t take_d = static_cast<int32_t>(
            std::min<int64_t>(running[j].demotable_blocks - demote[j], need - free));
        if (take_d <= 0) continue;
        demote[j] += take_d;
        free += take_d;
      }
      // Step 2: preempt.
      while (need > free && newest >= 0 && newest != i) preempt(newest);
      if (need > free) {
        preempt(i);
        continue;
      }
      free -= need;
      budget -= take;
      chunk_of[i] = static_cast<int>(plan.chunks.size());
      plan.chunks.push_back({s.id, take, need});
    }
  }
  plan.chunks.erase(std::remove_if(plan.chunks.begin(), plan.chunks.end(),
                                   [](const ScheduledChunk& c) { return c.num_tokens == 0; }),
                    plan.chunks.end());

  // Requested (eager) demotions: what pressure left of the demotable pairs of sequences that
  // asked for the smaller codec, oldest first, under the per-step cap. Not added to `free`.
  const bool pressure_demoted =
      std::any_of(demote.begin(), demote.end(), [](int32_t d) { return d > 0; });
  std::vector<int32_t> eager(n, 0);
  int32_t eager_left = std::max(0, cfg.max_eager_demotions);
  for (int i = 0; i < n && eager_left > 0; ++i) {
    if (preempted[i] || !running[i].eager_demotion) continue;
    const int32_t t = std::min(running[i].demotable_blocks - demote[i], eager_left);
    if (t <= 0) continue;
    eager[i] = t;
    eager_left -= t;
  }
  for (int i = 0; i < n; ++i) {
    if (demote[i] > 0 || eager[i] > 0) {
      plan.demotions.push_back({running[i].id, demote[i], eager[i]});
    }
  }

  int running_count = n - static_cast<int>(plan.preempted.size());
  if (plan.preempted.empty() && !pressure_demoted) {
    std::vector<const SchedSeq*> order;
    for (const auto& w : waiting) order.push_back(&w);
    auto eff = [&](const SchedSeq* s) {
      return static_cast<int64_t>(s->priority) +
             (cfg.aging_steps > 0 ? s->waited_steps / cfg.aging_steps : 0);
    };
    std::stable_sort(order.begin(), order.end(), [&](const SchedSeq* a, const SchedSeq* b) {
      const int64_t ea = eff(a), eb = eff(b);
      if (ea != eb) return ea > eb;
      return a->arrival < b->arrival;
    });
    for (const SchedSeq* w : order) {
      if (running_count >= cfg.max_running || budget <= 0) break;
      // Cached prefix in whole blocks, always leaving at least one token to compute.
      const int32_t hit_blocks =
          std::min(w->prefix_hit_tokens, w->num_tokens - 1) / cfg.block_size;
      const int32_t computed = hit_blocks * cfg.block_size;
      const int32_t remaining = w->num_tokens - computed;
      const int32_t take = static_cast<int32_t>(std::min<int64_t>(remaining, budget));
      const int32_t need = BlocksFor(computed + take, cfg.block_size) - hit_blocks;
      const int64_t cost = need + w->prefix_hit_blocks_free;
      if (cost + cfg.watermark_blocks > free) break;
      free -= cost;
      budget -= take;
      ++running_count;
      plan.admitted.push_back(w->id);
      plan.chunks.push_back({w->id, take, need});
    }
  }
  for (const auto& c : plan.chunks) plan.batch_tokens += c.num_tokens;
  return plan;
}

}  // namespace compressd
