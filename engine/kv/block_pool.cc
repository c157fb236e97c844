#include "engine/kv/block_pool.h"

#include "engine/core/logging.h"

namespace compressd {

BlockPool::BlockPool(int32_t n)
    : refs_(n, 0),
      hash_of_(n, 0),
      hashed_(n, false),
      demoted_(n, false),
      cached_pos_(n),
      in_cached_(n, false) {
  free_.reserve(n);
  for (int32_t i = n - 1; i >= 0; --i) free_.push_back(i);
  num_free_ = n;
}

void BlockPool::Unhash(int32_t id) {
  if (!hashed_[id]) return;
  auto it = by_hash_.find(hash_of_[id]);
  if (it != by_hash_.end() && it->second == id) by_hash_.erase(it);
  hashed_[id] = false;
}

int32_t BlockPool::Allocate() {
  int32_t id = -1;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else if (!cached_.empty()) {
    id = cached_.front();
    cached_.pop_front();
    in_cached_[id] = false;
    Unhash(id);
  } else {
    return -1;
  }
  CHECK(refs_[id] == 0);
  refs_[id] = 1;
  demoted_[id] = false;
  --num_free_;
  return id;
}

void BlockPool::IncRef(int32_t id) {
  if (refs_[id] == 0) {
    CHECK(in_cached_[id]);
    cached_.erase(cached_pos_[id]);
    in_cached_[id] = false;
    --num_free_;
  }
  ++refs_[id];
}

void BlockPool::DecRef(int32_t id) {
  CHECK(refs_[id] > 0);
  if (--refs_[id] > 0) return;
  ++num_free_;
  if (hashed_[id]) {
    cached_.push_back(id);
    cached_pos_[id] = std::prev(cached_.end());
    in_cached_[id] = true;
  } else {
    free_.push_back(id);
  }
}

int32_t BlockPool::Lookup(uint64_t hash) {
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return -1;
  IncRef(it->second);
  return it->second;
}

bool BlockPool::Peek(uint64_t hash, bool* in_free) const {
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return false;
  if (in_free != nullptr) *in_free = refs_[it->second] == 0;
  return true;
}

void BlockPool::SetHash(int32_t id, uint64_t hash) {
  if (hashed_[id] || by_hash_.contains(hash)) return;
  hashed_[id] = true;
  hash_of_[id] = hash;
  by_hash_[hash] = id;
}

}  // namespace compressd
