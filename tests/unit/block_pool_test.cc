#include "engine/kv/block_pool.h"

#include "gtest/gtest.h"

namespace switchyard {
namespace {

TEST(BlockPoolTest, AllocatesAllOrNothingAndFreesOnLastRelease) {
  BlockPool pool(4);
  std::vector<int32_t> a, b;
  ASSERT_TRUE(pool.Allocate(3, &a));
  EXPECT_EQ(pool.num_free(), 1);
  EXPECT_FALSE(pool.Allocate(2, &b));
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(pool.num_free(), 1);
  pool.Retain(a[0]);
  pool.Release(a);
  EXPECT_EQ(pool.num_free(), 3);
  EXPECT_EQ(pool.ref_count(a[0]), 1);
  pool.Release(std::vector<int32_t>{a[0]});
  EXPECT_EQ(pool.num_free(), 4);
}

std::vector<int32_t> Tokens(int first, int n) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = first + i;
  return t;
}

// A sequence of `tokens` (a multiple of 4) in namespace `ns`: allocates, registers every block.
std::vector<int32_t> Fill(BlockPool& pool, uint64_t ns, const std::vector<int32_t>& tokens) {
  std::vector<int32_t> blocks;
  EXPECT_TRUE(pool.Allocate(static_cast<int>(tokens.size() / 4), &blocks));
  uint64_t parent = 0;
  for (size_t i = 0; i < blocks.size(); ++i) {
    parent =
        pool.Register(blocks[i], parent, ns, std::span<const int32_t>(tokens).subspan(i * 4, 4));
  }
  return blocks;
}

TEST(BlockPoolTest, SharesCachedPrefixBlocksWithinANamespaceOnly) {
  BlockPool pool(8);
  const std::vector<int32_t> prompt = Tokens(100, 12);
  const std::vector<int32_t> a = Fill(pool, 7, prompt);
  std::vector<int32_t> hit;
  std::vector<uint64_t> keys;
  // Same tokens, same namespace: all three blocks (or fewer when capped).
  EXPECT_EQ(pool.Match(7, prompt, 4, 2, &hit, &keys), 2);
  EXPECT_EQ(hit, std::vector<int32_t>(a.begin(), a.begin() + 2));
  EXPECT_EQ(pool.ref_count(a[0]), 2);
  EXPECT_EQ(keys[1], BlockPool::BlockKey(keys[0], 7, std::span(prompt).subspan(4, 4)));
  // Another namespace (adapter) or a different first block: nothing.
  std::vector<int32_t> none;
  EXPECT_EQ(pool.Match(8, prompt, 4, 3, &none, nullptr), 0);
  std::vector<int32_t> other = prompt;
  other[1] = 0;
  EXPECT_EQ(pool.Match(7, other, 4, 3, &none, nullptr), 0);
  // Divergence in the second block: one block.
  other = prompt;
  other[5] = 0;
  EXPECT_EQ(pool.Match(7, other, 4, 3, &none, nullptr), 1);
  pool.Release(none);
  pool.Release(hit);
  EXPECT_EQ(pool.ref_count(a[0]), 1);
}

TEST(BlockPoolTest, ReleasedCachedBlocksStayFindableUntilEvictedLatestBlockFirst) {
  BlockPool pool(4);
  const std::vector<int32_t> prompt = Tokens(0, 12);
  const std::vector<int32_t> a = Fill(pool, 1, prompt);
  pool.Release(a);
  EXPECT_EQ(pool.num_free(), 4);
  EXPECT_EQ(pool.num_cached_free(), 3);
  // One new block comes from the never-used one; the next evicts the sequence's last block.
  std::vector<int32_t> fresh;
  ASSERT_TRUE(pool.Allocate(2, &fresh));
  EXPECT_EQ(fresh[1], a[2]);
  std::vector<int32_t> hit;
  EXPECT_EQ(pool.Match(1, prompt, 4, 3, &hit, nullptr), 2);
  EXPECT_EQ(pool.num_free(), 0);
  EXPECT_FALSE(pool.Allocate(1, &fresh));
  pool.Release(hit);
  pool.Release(fresh);
  EXPECT_EQ(pool.num_free(), 4);
}

TEST(BlockPoolTest, DuplicateContentKeepsOneRegistration) {
  BlockPool pool(4);
  const std::vector<int32_t> prompt = Tokens(5, 4);
  const std::vector<int32_t> a = Fill(pool, 0, prompt);
  const std::vector<int32_t> b = Fill(pool, 0, prompt);  // computed twice, e.g. concurrently
  pool.Release(b);
  EXPECT_EQ(pool.num_cached_free(), 0);  // b was never registered: plain free
  pool.Release(a);
  EXPECT_EQ(pool.num_cached_free(), 1);
  std::vector<int32_t> hit;
  EXPECT_EQ(pool.Match(0, prompt, 4, 1, &hit, nullptr), 1);
  EXPECT_EQ(hit[0], a[0]);
}

}  // namespace
}  // namespace switchyard
