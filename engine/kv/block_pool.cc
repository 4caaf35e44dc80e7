#include "engine/kv/block_pool.h"

#include <algorithm>

#include "engine/core/check.h"

namespace switchyard {
namespace {

uint64_t Mix(uint64_t h, uint64_t v) {
  // splitmix64 finaliser over the running state: cheap, and good enough as the content is
  // compared on every match anyway.
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

}  // namespace

BlockPool::BlockPool(int num_blocks) : blocks_(static_cast<size_t>(num_blocks)) {
  plain_free_.reserve(static_cast<size_t>(num_blocks));
  // Hand out low ids first (pop from the back).
  for (int b = num_blocks - 1; b >= 0; --b) plain_free_.push_back(b);
}

uint64_t BlockPool::BlockKey(uint64_t parent, uint64_t ns, std::span<const int32_t> tokens) {
  uint64_t h = Mix(Mix(0x5157A1DULL, parent), ns);
  for (int32_t t : tokens) h = Mix(h, static_cast<uint32_t>(t));
  return h == 0 ? 1 : h;  // 0 means "no parent"
}

void BlockPool::Unlink(int32_t b) {
  Block& x = blocks_[b];
  (x.prev == kNone ? lru_head_ : blocks_[x.prev].next) = x.next;
  (x.next == kNone ? lru_tail_ : blocks_[x.next].prev) = x.prev;
  x.prev = x.next = kNone;
  --num_cached_free_;
}

void BlockPool::PushBack(int32_t b) {
  Block& x = blocks_[b];
  x.prev = lru_tail_;
  x.next = kNone;
  (lru_tail_ == kNone ? lru_head_ : blocks_[lru_tail_].next) = b;
  lru_tail_ = b;
  ++num_cached_free_;
}

void BlockPool::Forget(int32_t b) {
  Block& x = blocks_[b];
  if (!x.registered) return;
  auto it = by_key_.find(x.key);
  if (it != by_key_.end() && it->second == b) by_key_.erase(it);
  x.registered = false;
  x.tokens.clear();
}

bool BlockPool::Allocate(int n, std::vector<int32_t>* out) {
  if (n < 0 || n > num_free()) return false;
  for (int i = 0; i < n; ++i) {
    int32_t b;
    if (!plain_free_.empty()) {
      b = plain_free_.back();
      plain_free_.pop_back();
    } else {
      b = lru_head_;
      Unlink(b);
      Forget(b);
    }
    blocks_[b].refs = 1;
    out->push_back(b);
  }
  return true;
}

void BlockPool::Retain(int32_t block) {
  Block& x = blocks_[block];
  SY_CHECK(x.refs > 0 || x.registered);
  if (x.refs++ == 0) Unlink(block);  // a cached free block is in use again
}

void BlockPool::Release(std::span<const int32_t> blocks) {
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
    const int32_t b = *it;
    Block& x = blocks_[b];
    SY_CHECK(x.refs > 0);
    if (--x.refs > 0) continue;
    if (x.registered) {
      PushBack(b);
    } else {
      plain_free_.push_back(b);
    }
  }
}

uint64_t BlockPool::Register(int32_t block, uint64_t parent, uint64_t ns,
                             std::span<const int32_t> tokens) {
  const uint64_t key = BlockKey(parent, ns, tokens);
  Block& x = blocks_[block];
  SY_CHECK(x.refs > 0);
  if (x.registered) return x.key;
  if (by_key_.contains(key)) return key;  // the same content lives in another block
  x.registered = true;
  x.key = key;
  x.parent = parent;
  x.ns = ns;
  x.tokens.assign(tokens.begin(), tokens.end());
  by_key_[key] = block;
  return key;
}

int BlockPool::Find(uint64_t ns, std::span<const int32_t> tokens, int block_size, int max_blocks,
                    std::vector<int32_t>* out, std::vector<uint64_t>* keys) const {
  uint64_t parent = 0;
  int n = 0;
  while (n < max_blocks && static_cast<size_t>(n + 1) * block_size <= tokens.size()) {
    const std::span<const int32_t> chunk =
        tokens.subspan(static_cast<size_t>(n) * block_size, static_cast<size_t>(block_size));
    const uint64_t key = BlockKey(parent, ns, chunk);
    auto it = by_key_.find(key);
    if (it == by_key_.end()) break;
    const Block& x = blocks_[it->second];
    if (x.parent != parent || x.ns != ns ||
        !std::equal(chunk.begin(), chunk.end(), x.tokens.begin(), x.tokens.end())) {
      break;  // a hash collision: not the same content
    }
    out->push_back(it->second);
    if (keys != nullptr) keys->push_back(key);
    parent = key;
    ++n;
  }
  return n;
}

int BlockPool::Match(uint64_t ns, std::span<const int32_t> tokens, int block_size, int max_blocks,
                     std::vector<int32_t>* out, std::vector<uint64_t>* keys) {
  const size_t first = out->size();
  const int n = Find(ns, tokens, block_size, max_blocks, out, keys);
  for (size_t i = first; i < out->size(); ++i) Retain((*out)[i]);
  return n;
}

}  // namespace switchyard
