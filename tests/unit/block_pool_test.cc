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

}  // namespace
}  // namespace switchyard
