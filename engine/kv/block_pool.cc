#include "engine/kv/block_pool.h"

#include "engine/core/check.h"

namespace switchyard {

BlockPool::BlockPool(int num_blocks) : refs_(static_cast<size_t>(num_blocks), 0) {
  free_.reserve(static_cast<size_t>(num_blocks));
  // Hand out low ids first (pop from the back).
  for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

bool BlockPool::Allocate(int n, std::vector<int32_t>* out) {
  if (n < 0 || n > num_free()) return false;
  for (int i = 0; i < n; ++i) {
    const int32_t b = free_.back();
    free_.pop_back();
    refs_[b] = 1;
    out->push_back(b);
  }
  return true;
}

void BlockPool::Retain(int32_t block) {
  SY_CHECK(refs_[block] > 0);
  ++refs_[block];
}

void BlockPool::Release(std::span<const int32_t> blocks) {
  for (int32_t b : blocks) {
    SY_CHECK(refs_[b] > 0);
    if (--refs_[b] == 0) free_.push_back(b);
  }
}

}  // namespace switchyard
