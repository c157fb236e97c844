// The BPE merge loop shared by both vocabulary types. Symbols form a doubly linked list
// over the word; candidate merges wait in a priority queue and are checked for staleness
// when popped, so a word of n characters costs O(n log n) rather than O(n^2) rescans.
#include <cstdint>
#include <queue>
#include <string_view>
#include <vector>

#include "engine/model/tokenizer_impl.h"
#include "engine/model/unicode.h"

namespace compressd::tokenizer_internal {
namespace {

struct Symbol {
  uint32_t start;
  uint32_t len;  // 0 once merged into its left neighbour
  int32_t id;    // -1 when the text is not a token
  int32_t prev;
  int32_t next;
};

struct Candidate {
  double priority;  // lower merges first: merge rank, or minus the spm score
  int32_t left;
  int32_t right;
  uint32_t len;  // combined length when queued; a mismatch later means the pair is stale
  int32_t merged_id;
};

struct CandidateAfter {
  bool operator()(const Candidate& a, const Candidate& b) const {
    if (a.priority != b.priority) return a.priority > b.priority;
    return a.left > b.left;  // ties go to the leftmost pair
  }
};

}  // namespace

void BpeTokenizer::EncodeWord(std::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (opts_.ignore_merges) {
    auto it = piece_to_id_.find(Av(word));
    if (it != piece_to_id_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  std::vector<Symbol> syms;
  syms.reserve(word.size());
  for (size_t pos = 0; pos < word.size();) {
    const size_t start = pos;
    const size_t len = ValidUtf8Length(word, pos);
    pos += len == 0 ? 1 : len;
    auto it = piece_to_id_.find(Av(word.substr(start, pos - start)));
    const int32_t id = it == piece_to_id_.end() ? -1 : it->second;
    const auto idx = static_cast<int32_t>(syms.size());
    syms.push_back({static_cast<uint32_t>(start), static_cast<uint32_t>(pos - start), id,
                    idx - 1, idx + 1});
  }
  syms.back().next = -1;

  const bool by_score = merges_.empty();
  std::priority_queue<Candidate, std::vector<Candidate>, CandidateAfter> queue;
  auto try_pair = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const Symbol& a = syms[l];
    const Symbol& b = syms[r];
    if (by_score) {
      auto it = piece_to_id_.find(Av(word.substr(a.start, a.len + b.len)));
      if (it == piece_to_id_.end()) return;
      const TokenType t = vocab_.token_types[it->second];
      if (t != TokenType::kNormal && t != TokenType::kUserDefined) return;
      const float score = vocab_.scores.empty() ? 0.0f : vocab_.scores[it->second];
      queue.push({-static_cast<double>(score), l, r, a.len + b.len, it->second});
    } else {
      if (a.id < 0 || b.id < 0) return;
      const uint64_t key = (static_cast<uint64_t>(a.id) << 32) | static_cast<uint32_t>(b.id);
      auto it = merges_.find(key);
      if (it == merges_.end()) return;
      queue.push({static_cast<double>(it->second.rank), l, r, a.len + b.len,
                  it->second.merged_id});
    }
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(syms.size()); ++i) try_pair(i, i + 1);

  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& a = syms[c.left];
    Symbol& b = syms[c.right];
    if (a.len == 0 || b.len == 0 || a.next != c.right || a.len + b.len != c.len) continue;
    a.len += b.len;
    a.id = c.merged_id;
    b.len = 0;
    a.next = b.next;
    if (b.next >= 0) syms[b.next].prev = c.left;
    try_pair(a.prev, c.left);
    try_pair(c.left, a.next);
  }

  bool last_was_unk = false;
  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    const Symbol& s = syms[i];
    if (s.id >= 0) {
      out->push_back(s.id);
      last_was_unk = false;
    } else {
      EmitUnknown(word.substr(s.start, s.len), &last_was_unk, out);
    }
  }
}

void BpeTokenizer::EmitUnknown(std::string_view bytes, bool* last_was_unk,
                               std::vector<int32_t>* out) const {
  if (opts_.byte_fallback) {
    bool all = true;
    for (char ch : bytes) all = all && byte_ids_[static_cast<uint8_t>(ch)] >= 0;
    if (all) {
      for (char ch : bytes) out->push_back(byte_ids_[static_cast<uint8_t>(ch)]);
      *last_was_unk = false;
      return;
    }
  }
  if (vocab_.unk_id < 0) return;  // nothing to stand for it: the text is dropped
  if (*last_was_unk && opts_.fuse_unk) return;
  out->push_back(vocab_.unk_id);
  *last_was_unk = true;
}

}  // namespace compressd::tokenizer_internal
