#include "engine/kv/block_pool.h"

#include "gtest/gtest.h"

namespace compressd {
namespace {

TEST(BlockPool, AllocateUntilEmptyThenFreeReturnsBlocks) {
  BlockPool p(3);
  EXPECT_EQ(p.NumFree(), 3);
  const int a = p.Allocate(), b = p.Allocate(), c = p.Allocate();
  EXPECT_GE(a, 0);
  EXPECT_NE(a, b);
  EXPECT_NE(b, c);
  EXPECT_EQ(p.Allocate(), -1);
  EXPECT_EQ(p.NumFree(), 0);
  p.DecRef(b);
  EXPECT_EQ(p.NumFree(), 1);
  EXPECT_EQ(p.Allocate(), b);
}

TEST(BlockPool, SharedBlocksFreeOnLastRelease) {
  BlockPool p(2);
  const int a = p.Allocate();
  p.IncRef(a);
  EXPECT_EQ(p.RefCount(a), 2);
  p.DecRef(a);
  EXPECT_EQ(p.NumFree(), 1);
  p.DecRef(a);
  EXPECT_EQ(p.NumFree(), 2);
}

TEST(BlockPool, PrefixCacheRevivesFreedHashedBlocks) {
  BlockPool p(2);
  const int a = p.Allocate();
  p.SetHash(a, 1234);
  p.DecRef(a);  // cached, counts as free
  EXPECT_EQ(p.NumFree(), 2);
  bool in_free = false;
  EXPECT_TRUE(p.Peek(1234, &in_free));
  EXPECT_TRUE(in_free);
  EXPECT_EQ(p.Lookup(1234), a);
  EXPECT_EQ(p.RefCount(a), 1);
  EXPECT_EQ(p.NumFree(), 1);
  EXPECT_EQ(p.Lookup(999), -1);
}

TEST(BlockPool, EvictsCachedBlocksOnlyWhenNothingElseIsFree) {
  BlockPool p(2);
  const int a = p.Allocate();
  p.SetHash(a, 1);
  p.DecRef(a);
  const int b = p.Allocate();  // takes the never-hashed block first
  EXPECT_NE(b, a);
  EXPECT_TRUE(p.Peek(1, nullptr));
  const int c = p.Allocate();  // now evicts the cached one
  EXPECT_EQ(c, a);
  EXPECT_FALSE(p.Peek(1, nullptr));
}

TEST(BlockPool, FirstHashWins) {
  BlockPool p(2);
  const int a = p.Allocate(), b = p.Allocate();
  p.SetHash(a, 5);
  p.SetHash(b, 5);
  EXPECT_EQ(p.Lookup(5), a);
}

}  // namespace
}  // namespace compressd
