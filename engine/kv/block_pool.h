// Allocation of the paged KV cache's blocks: a free list with reference counts (a block may be
// shared by sequences with a common prefix). Block ids index the engine's KV cache.
//
// Thread-safety: not thread-safe; owned by whoever schedules steps (one thread).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace switchyard {

class BlockPool {
 public:
  explicit BlockPool(int num_blocks);

  int num_blocks() const { return static_cast<int>(refs_.size()); }
  int num_free() const { return static_cast<int>(free_.size()); }

  // Appends n fresh blocks (refcount 1) to `out`, or returns false and takes none.
  bool Allocate(int n, std::vector<int32_t>* out);
  void Retain(int32_t block);
  // Drops one reference to each block; a block whose count reaches zero is free again.
  void Release(std::span<const int32_t> blocks);
  int ref_count(int32_t block) const { return refs_[block]; }

 private:
  std::vector<int32_t> free_;
  std::vector<int32_t> refs_;
};

}  // namespace switchyard
