// Token-level constrained decoding over a byte-level Grammar.
//
// The matcher's state is a set of parse stacks (persistent, hash-consed lists of grammar
// positions), advanced byte by byte; a token is allowed when its bytes keep at least one stack
// alive. Scanning the whole vocabulary per step would cost milliseconds, so, as XGrammar does,
// token sets are cached per context: a group of stacks that share everything below their tops
// (a rule's alternatives, just expanded), seen through their tops and the 8 frames below.
// Walking the vocabulary once from that view decides which tokens are accepted whatever lies
// deeper, and leaves undecided the few that run past the view; a step ORs the cached sets of its
// groups and walks only the undecided tokens against the real stacks. Contexts are cached
// lazily, by the first request that meets them, in the CompiledGrammar shared by every request
// with the same constraint.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/grammar/grammar.h"

namespace switchyard::grammar {

// Each token's bytes as they appear in generated text, in a trie walked in preorder.
class TokenVocabulary {
 public:
  // `token_bytes[id]` empty: the grammar never allows the token (special tokens).
  // `first_bytes`, when not empty, is what each token writes as an output's first token
  // (SentencePiece decoders drop its leading space).
  static std::shared_ptr<const TokenVocabulary> Create(std::vector<std::string> token_bytes,
                                                       std::vector<std::string> first_bytes = {});

  int32_t size() const { return static_cast<int32_t>(bytes_.size()); }
  const std::string& bytes(int32_t id) const { return bytes_[id]; }
  bool first_differs() const { return !first_bytes_.empty(); }
  const std::string& first_bytes(int32_t id) const { return first_bytes_[id]; }

  struct TrieNode {
    uint8_t byte;
    uint32_t depth;        // root: 0
    int32_t subtree_end;   // preorder index one past this node's subtree
    int32_t tokens_begin;  // into trie_tokens()
    int32_t tokens_end;
  };
  const std::vector<TrieNode>& trie() const { return trie_; }
  const std::vector<int32_t>& trie_tokens() const { return trie_tokens_; }
  int max_depth() const { return max_depth_; }

 private:
  std::vector<std::string> bytes_;
  std::vector<std::string> first_bytes_;
  std::vector<TrieNode> trie_;
  std::vector<int32_t> trie_tokens_;
  int max_depth_ = 0;
};

// A bitset over token ids.
using TokenMask = std::vector<uint32_t>;
inline bool MaskTest(const TokenMask& m, int32_t t) { return (m[t >> 5] >> (t & 31)) & 1u; }
inline void MaskSet(TokenMask& m, int32_t t) { m[t >> 5] |= 1u << (t & 31); }

// A grammar bound to a vocabulary, with the per-position token caches.
//
// Thread-safety: shared by many matchers on many threads (the cache is guarded).
class CompiledGrammar {
 public:
  CompiledGrammar(Grammar grammar, std::shared_ptr<const TokenVocabulary> vocab);
  const Grammar& grammar() const { return grammar_; }
  const TokenVocabulary& vocab() const { return *vocab_; }

  struct PositionTokens {
    TokenMask accepted;              // allowed whatever the stack below
    std::vector<int32_t> undecided;  // depend on the stack below
    bool whole_stack = false;        // the frames were the whole stack: nothing undecided
    bool overflowed = false;         // computed with truncated stack sets (see kMaxStacks)
  };
  // The tokens a group of stacks allows that share everything below their tops. `key`: the
  // number of tops, their elements (sorted), then the frames below them (grammar elements, top
  // first), ending with StackArena::kComplete when that is the whole stack. Computed on first
  // use; `computed` (optional) is set when this call had to.
  std::shared_ptr<const PositionTokens> TokensAt(const std::vector<int32_t>& key,
                                                 bool* computed = nullptr) const;
  int64_t cached_positions() const;

 private:
  Grammar grammar_;
  std::shared_ptr<const TokenVocabulary> vocab_;
  mutable absl::Mutex mu_;
  mutable absl::flat_hash_map<std::vector<int32_t>, std::shared_ptr<const PositionTokens>> cache_
      ABSL_GUARDED_BY(mu_);
};

// Parse stacks, hash-consed: equal stacks and equal stack sets share one id, and byte
// transitions between sets are memoised.
class StackArena {
 public:
  // Stack bottoms. Real stacks end in kComplete (popping it finishes the root rule); a cached
  // view of a stack's top frames ends in kBoundary (popping it leaves what the view knows), which
  // becomes kBeyond once a byte is consumed past it.
  static constexpr int32_t kComplete = -1;
  static constexpr int32_t kBoundary = -2;
  static constexpr int32_t kBeyond = -3;
  static constexpr int32_t kEmptySet = 0;
  // A grammar ambiguous enough to keep more parse stacks alive at once is not followed: sets are
  // cut there and overflowed() says so (the request fails rather than the step stalling).
  static constexpr size_t kMaxStacks = 1024;

  explicit StackArena(const Grammar& grammar) : g_(grammar) { Reset(); }
  void Reset();

  int32_t InternNode(int32_t element, int32_t parent) { return Intern(element, parent); }
  // The stacks at the start of `rule`, finishing into kComplete.
  int32_t RootSet(int32_t rule);
  // The stacks just before `element`, with `below` (a node or a bottom) under it.
  int32_t StartSet(int32_t element, int32_t below);
  int32_t SetOf(const std::vector<int32_t>& stacks);
  int32_t Advance(int32_t set, uint8_t byte) {
    const int32_t next = transitions_[static_cast<size_t>(set) * 256 + byte];
    return next >= 0 ? next : ComputeTransition(set, byte);
  }
  int32_t Walk(int32_t set, const std::string& bytes, size_t from = 0);
  const std::vector<int32_t>& Members(int32_t set) const { return sets_[set]; }
  int32_t ElementOf(int32_t stack) const { return nodes_[stack].element; }
  int32_t ParentOf(int32_t stack) const { return nodes_[stack].parent; }
  bool Alive(int32_t set) const { return set != kEmptySet; }
  // Whether the set has a stack that is not past the cached frames (a token ending here is
  // decided: allowed).
  bool Decided(int32_t set) const { return decided_[set] != 0; }
  bool overflowed() const { return overflowed_; }

 private:
  struct Node {
    int32_t element;
    int32_t parent;  // a node or a bottom
  };
  int32_t Intern(int32_t element, int32_t parent);
  int32_t ComputeTransition(int32_t set, uint8_t byte);
  void Expand(int32_t element, int32_t parent, std::vector<int32_t>* out);
  int32_t InternSet(std::vector<int32_t>& members);

  const Grammar& g_;
  std::vector<Node> nodes_;
  absl::flat_hash_map<uint64_t, int32_t> node_ids_;
  std::vector<std::vector<int32_t>> sets_;
  std::vector<uint8_t> decided_;  // by set
  absl::flat_hash_map<std::vector<int32_t>, int32_t> set_ids_;
  std::vector<int32_t> transitions_;  // [set * 256 + byte]: the next set, -1 until computed
  std::vector<std::pair<int32_t, int32_t>> work_;
  absl::flat_hash_set<uint64_t> visited_;
  std::vector<int32_t> scratch_;
  bool overflowed_ = false;
};

// One request's constraint state.
//
// Thread-safety: one matcher, one thread at a time.
class GrammarMatcher {
 public:
  explicit GrammarMatcher(std::shared_ptr<const CompiledGrammar> grammar);

  // The tokens whose bytes the grammar allows next (stop tokens are the caller's: see CanEnd).
  void FillMask(TokenMask* mask);
  // The root rule may end here (stop tokens are allowed).
  bool CanEnd() const;
  // Nothing but the end is allowed.
  bool MustEnd() const;
  // Whether the grammar allows the token next, walked directly (no cache).
  bool Allows(int32_t token);
  // Advances over a token; refuses one the grammar does not allow (the state is unchanged).
  absl::Status Accept(int32_t token);
  int64_t accepted_tokens() const { return accepted_; }
  // The grammar kept more than StackArena::kMaxStacks parses alive, or one step needed more than
  // kMaxNewContextsPerMask token sets computed (each a walk of the vocabulary): masks may miss
  // tokens, so the request should fail (the grammar is too ambiguous) rather than stall the
  // batch.
  static constexpr int kMaxNewContextsPerMask = 32;
  bool overflowed() const { return overflowed_ || arena_.overflowed(); }

 private:
  const std::string& BytesOf(int32_t token) const;
  int32_t StateAfter(int32_t token);
  std::shared_ptr<const CompiledGrammar::PositionTokens> TokensFor(
      int32_t parent, const std::vector<int32_t>& stacks);
  void FillMaskByScan(TokenMask* mask);

  std::shared_ptr<const CompiledGrammar> grammar_;
  StackArena arena_;
  int32_t state_;
  int64_t accepted_ = 0;
  bool overflowed_ = false;
  int new_contexts_ = 0;  // computed during the current FillMask
};

}  // namespace switchyard::grammar
