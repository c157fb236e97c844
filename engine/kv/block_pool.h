// BlockPool: metadata of the paged KV cache — block ids, reference counts, the free list
// and the prefix cache (block hash -> id). It never touches block bytes (KvCache does).
//
// A block whose refcount drops to 0 while it holds a registered hash stays "cached": it
// counts as free and may be reused by a later request with the same prefix until
// Allocate() evicts it (least recently freed first). Engine thread only.
#pragma once

#include <cstdint>
#include <list>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace compressd {

class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);

  int32_t num_blocks() const { return static_cast<int32_t>(refs_.size()); }
  // Blocks that Allocate() can hand out (truly free + cached with refcount 0).
  int32_t NumFree() const { return num_free_; }
  int32_t NumUsed() const { return num_blocks() - num_free_; }

  // A block with refcount 1, or -1 when none is left. Evicts a cached block if needed.
  int32_t Allocate();
  void IncRef(int32_t id);
  void DecRef(int32_t id);
  int32_t RefCount(int32_t id) const { return refs_[id]; }

  // Prefix cache. Lookup returns the block holding `hash` with its refcount incremented
  // (reviving it from the cached-free list), or -1.
  int32_t Lookup(uint64_t hash);
  // True when `hash` is cached, without taking a reference; *in_free says whether
  // taking it would consume a free block.
  bool Peek(uint64_t hash, bool* in_free) const;
  // Registers a full block's hash (first writer wins).
  void SetHash(int32_t id, uint64_t hash);
  // Drops a block's registered hash, if any (its bytes are about to change: demotion).
  void Forget(int32_t id) { Unhash(id); }
  bool Hashed(int32_t id) const { return hashed_[id]; }

  // Demoted blocks (KvCodec::Demote: one block holding two blocks' tokens). Allocate clears
  // the mark; the block table's owner sets it.
  void SetDemoted(int32_t id) { demoted_[id] = true; }
  bool Demoted(int32_t id) const { return demoted_[id]; }

 private:
  void Unhash(int32_t id);

  std::vector<int32_t> refs_;
  std::vector<uint64_t> hash_of_;
  std::vector<bool> hashed_;
  std::vector<bool> demoted_;
  std::vector<int32_t> free_;  // never-hashed free blocks (stack)
  std::list<int32_t> cached_;  // refcount-0 hashed blocks, oldest first
  std::vector<std::list<int32_t>::iterator> cached_pos_;
  std::vector<bool> in_cached_;
  absl::flat_hash_map<uint64_t, int32_t> by_hash_;
  int32_t num_free_ = 0;
};

}  // namespace compressd
