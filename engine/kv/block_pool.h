// Allocation of the paged KV cache's blocks, with automatic prefix caching.
//
// Blocks have reference counts (a block may be shared by sequences with a common prefix). A full
// block whose tokens are known can be registered under its content key: the chained hash of the
// previous block's key, a namespace (the adapter and its version: adapters change the hidden
// states of every layer, so equal tokens under different adapters are different K/V) and its
// tokens. A later sequence whose prompt starts with the same blocks in the same namespace retains
// them instead of recomputing (Match). When the last holder releases a registered block, it stays
// cached and findable until an allocation needs the space; such blocks are evicted least
// recently released first. Matches compare the stored tokens, not just the hash, so a hash
// collision can never hand out wrong K/V.
//
// Thread-safety: not thread-safe; owned by whoever schedules steps (one thread).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace switchyard {

class BlockPool {
 public:
  explicit BlockPool(int num_blocks);

  int num_blocks() const { return static_cast<int>(blocks_.size()); }
  // Blocks an Allocate can hand out: never-used or released ones, cached ones included.
  int num_free() const { return static_cast<int>(plain_free_.size()) + num_cached_free_; }
  // Registered blocks that no sequence holds (evictable).
  int num_cached_free() const { return num_cached_free_; }

  // Appends n blocks (refcount 1) to `out`, or returns false and takes none. Unregistered free
  // blocks go first; then cached ones are evicted, least recently released first.
  bool Allocate(int n, std::vector<int32_t>* out);
  void Retain(int32_t block);
  // Drops one reference to each block. Blocks reaching zero are queued for reuse in reverse order
  // of `blocks`, so that a sequence's later blocks are evicted before its earlier ones.
  void Release(std::span<const int32_t> blocks);
  int ref_count(int32_t block) const { return blocks_[block].refs; }

  // The content key of a full block after the block keyed `parent` (0 for the first block).
  static uint64_t BlockKey(uint64_t parent, uint64_t ns, std::span<const int32_t> tokens);

  // Registers held block `block`, now full with `tokens`, under its content key (returned). When
  // another block already holds that content, the key is returned and `block` stays unregistered.
  uint64_t Register(int32_t block, uint64_t parent, uint64_t ns, std::span<const int32_t> tokens);

  // The longest run of cached blocks holding `tokens` from the start, at most `max_blocks` of
  // them, each of block_size tokens: retains them, appends them to `out` and returns how many.
  // `keys` (may be null) receives their content keys.
  int Match(uint64_t ns, std::span<const int32_t> tokens, int block_size, int max_blocks,
            std::vector<int32_t>* out, std::vector<uint64_t>* keys);
  // What Match would find, retaining nothing (for planning a step before committing it).
  int Find(uint64_t ns, std::span<const int32_t> tokens, int block_size, int max_blocks,
           std::vector<int32_t>* out, std::vector<uint64_t>* keys) const;

 private:
  static constexpr int32_t kNone = -1;
  struct Block {
    int32_t refs = 0;
    bool registered = false;
    uint64_t key = 0, parent = 0, ns = 0;
    std::vector<int32_t> tokens;
    int32_t prev = kNone, next = kNone;  // LRU list of registered free blocks
  };
  void Unlink(int32_t b);
  void PushBack(int32_t b);
  void Forget(int32_t b);  // drops a block's registration

  std::vector<Block> blocks_;
  std::vector<int32_t> plain_free_;  // unregistered free blocks (a stack)
  int32_t lru_head_ = kNone, lru_tail_ = kNone;
  int num_cached_free_ = 0;
  absl::flat_hash_map<uint64_t, int32_t> by_key_;
};

}  // namespace switchyard
