#include "engine/grammar/matcher.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace switchyard::grammar {
namespace {

// How many frames below a group of stack tops a cached token set looks at; more only when over
// kMaxUndecided tokens would be left to check per step against the real stacks. Fewer frames,
// fewer distinct contexts (a bounded repetition deep in the stack multiplies them); more, fewer
// undecided tokens. 8 measured best on bench_structured_output (1, 3, 5, 7, 10, 15 and
// escalating sequences tried).
constexpr int kFrameSteps[] = {8, 32};
constexpr size_t kMaxUndecided = 256;

}  // namespace

std::shared_ptr<const TokenVocabulary> TokenVocabulary::Create(
    std::vector<std::string> token_bytes, std::vector<std::string> first_bytes) {
  auto v = std::make_shared<TokenVocabulary>();
  v->bytes_ = std::move(token_bytes);
  v->first_bytes_ = std::move(first_bytes);
  v->first_bytes_.resize(v->first_bytes_.empty() ? 0 : v->bytes_.size());
  std::vector<int32_t> order;
  for (int32_t i = 0; i < v->size(); ++i) {
    if (!v->bytes_[i].empty()) order.push_back(i);
  }
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return v->bytes_[a] != v->bytes_[b] ? v->bytes_[a] < v->bytes_[b] : a < b;
  });
  // Preorder trie from the sorted tokens: a path of open nodes, closed as prefixes stop sharing.
  v->trie_.push_back({0, 0, 0, 0, 0});
  std::vector<int32_t> path{0};  // open nodes, root first
  const auto close_to = [&](size_t depth) {
    while (path.size() > depth + 1) {
      v->trie_[path.back()].subtree_end = static_cast<int32_t>(v->trie_.size());
      path.pop_back();
    }
  };
  const std::string* prev = nullptr;
  for (int32_t id : order) {
    const std::string& b = v->bytes_[id];
    size_t common = 0;
    if (prev != nullptr) {
      while (common < b.size() && common < prev->size() && b[common] == (*prev)[common]) ++common;
    }
    close_to(common);
    for (size_t d = common; d < b.size(); ++d) {
      path.push_back(static_cast<int32_t>(v->trie_.size()));
      v->trie_.push_back({static_cast<uint8_t>(b[d]), static_cast<uint32_t>(d + 1), 0, 0, 0});
    }
    TrieNode& leaf = v->trie_[path.back()];
    if (leaf.tokens_begin == leaf.tokens_end) {
      leaf.tokens_begin = leaf.tokens_end = static_cast<int32_t>(v->trie_tokens_.size());
    }
    v->trie_tokens_.push_back(id);
    ++leaf.tokens_end;
    prev = &b;
  }
  close_to(0);
  v->trie_[0].subtree_end = static_cast<int32_t>(v->trie_.size());
  for (const TrieNode& n : v->trie_) v->max_depth_ = std::max<int>(v->max_depth_, n.depth);
  return v;
}

// --- StackArena ---

void StackArena::Reset() {
  nodes_.clear();
  node_ids_.clear();
  sets_.clear();
  decided_.clear();
  set_ids_.clear();
  transitions_.clear();
  std::vector<int32_t> empty;
  InternSet(empty);  // id 0: kEmptySet
}

int32_t StackArena::Intern(int32_t element, int32_t parent) {
  const uint64_t key =
      (static_cast<uint64_t>(static_cast<uint32_t>(element)) << 32) | static_cast<uint32_t>(parent);
  auto [it, inserted] = node_ids_.try_emplace(key, static_cast<int32_t>(nodes_.size()));
  if (inserted) nodes_.push_back({element, parent});
  return it->second;
}

// Follows rule references and rule ends from `element` until every stack stops at a byte
// element (or finished: kComplete / kBoundary). No left recursion (Build refuses it), so this
// ends.
void StackArena::Expand(int32_t element, int32_t parent, std::vector<int32_t>* out) {
  work_.clear();
  work_.emplace_back(element, parent);
  while (!work_.empty()) {
    auto [e, p] = work_.back();
    work_.pop_back();
    // Each (element, parent) once per operation: nullable alternatives would otherwise multiply
    // the paths exponentially.
    const uint64_t key =
        (static_cast<uint64_t>(static_cast<uint32_t>(e)) << 32) | static_cast<uint32_t>(p);
    if (!visited_.insert(key).second) continue;
    const Grammar::Element& el = g_.elements[e];
    switch (el.kind) {
      case Grammar::Element::kBytes:
        out->push_back(Intern(e, p));
        break;
      case Grammar::Element::kRule: {
        // A reference in tail position continues straight into the parent: right recursion
        // (repetition) keeps the stack flat.
        const int32_t cont =
            g_.elements[e + 1].kind == Grammar::Element::kEnd ? p : Intern(e + 1, p);
        for (int32_t start : g_.rule_alternatives[el.arg]) work_.emplace_back(start, cont);
        break;
      }
      case Grammar::Element::kEnd:
        if (p < 0) {
          out->push_back(p);
        } else {
          work_.emplace_back(nodes_[p].element, nodes_[p].parent);
        }
        break;
    }
  }
}

int32_t StackArena::InternSet(std::vector<int32_t>& members) {
  std::sort(members.begin(), members.end());
  members.erase(std::unique(members.begin(), members.end()), members.end());
  if (members.size() > kMaxStacks) {  // bottoms sort first and are kept
    members.resize(kMaxStacks);
    overflowed_ = true;
  }
  auto [it, inserted] = set_ids_.try_emplace(members, static_cast<int32_t>(sets_.size()));
  if (inserted) {
    sets_.push_back(members);
    decided_.push_back(members.size() > 1 || (members.size() == 1 && members[0] != kBeyond));
    transitions_.resize(sets_.size() * 256, -1);
  }
  return it->second;
}

int32_t StackArena::StartSet(int32_t element, int32_t below) {
  scratch_.clear();
  visited_.clear();
  Expand(element, below, &scratch_);
  return InternSet(scratch_);
}

int32_t StackArena::RootSet(int32_t rule) {
  scratch_.clear();
  visited_.clear();
  for (int32_t start : g_.rule_alternatives[rule]) {
    std::vector<int32_t> part;
    Expand(start, kComplete, &part);
    scratch_.insert(scratch_.end(), part.begin(), part.end());
  }
  return InternSet(scratch_);
}

int32_t StackArena::SetOf(const std::vector<int32_t>& stacks) {
  scratch_ = stacks;
  return InternSet(scratch_);
}

int32_t StackArena::ComputeTransition(int32_t set, uint8_t byte) {
  const size_t key = static_cast<size_t>(set) * 256 + byte;
  std::vector<int32_t> next;
  visited_.clear();
  for (int32_t m : sets_[set]) {
    if (m == kBoundary || m == kBeyond) {
      next.push_back(kBeyond);  // past the cached frames: undecided whatever follows
      continue;
    }
    if (m < 0) continue;  // finished: nothing may follow
    const Node n = nodes_[m];
    const Grammar::Element& el = g_.elements[n.element];
    if (g_.byte_sets[el.arg].test(byte)) Expand(n.element + 1, n.parent, &next);
  }
  const int32_t id = InternSet(next);
  transitions_[key] = id;
  return id;
}

int32_t StackArena::Walk(int32_t set, const std::string& bytes, size_t from) {
  for (size_t i = from; i < bytes.size() && set != kEmptySet; ++i) {
    set = Advance(set, static_cast<uint8_t>(bytes[i]));
  }
  return set;
}

// --- CompiledGrammar ---

CompiledGrammar::CompiledGrammar(Grammar grammar, std::shared_ptr<const TokenVocabulary> vocab)
    : grammar_(std::move(grammar)), vocab_(std::move(vocab)) {}

int64_t CompiledGrammar::cached_positions() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(cache_.size());
}

std::shared_ptr<const CompiledGrammar::PositionTokens> CompiledGrammar::TokensAt(
    const std::vector<int32_t>& key, bool* computed) const {
  {
    absl::MutexLock lock(&mu_);
    if (auto it = cache_.find(key); it != cache_.end()) return it->second;
  }
  if (computed != nullptr) *computed = true;
  // key: [number of tops, the tops' elements..., the frames below them top first..., kComplete
  // when that is the whole stack].
  StackArena arena(grammar_);
  const size_t num_tops = static_cast<size_t>(key[0]);
  const bool whole = key.back() == StackArena::kComplete;
  const size_t end = key.size() - (whole ? 1 : 0);
  int32_t below = whole ? StackArena::kComplete : StackArena::kBoundary;
  for (size_t i = end; i-- > 1 + num_tops;) below = arena.InternNode(key[i], below);
  std::vector<int32_t> tops;
  for (size_t i = 1; i <= num_tops; ++i) tops.push_back(arena.InternNode(key[i], below));
  const int32_t start = arena.SetOf(tops);

  auto out = std::make_shared<PositionTokens>();
  out->whole_stack = whole;
  const TokenVocabulary& v = *vocab_;
  out->accepted.assign((static_cast<size_t>(v.size()) + 31) / 32, 0);
  const auto& trie = v.trie();
  std::vector<int32_t> at_depth(v.max_depth() + 1, start);
  for (size_t i = 1; i < trie.size();) {
    const TokenVocabulary::TrieNode& node = trie[i];
    const int32_t s = arena.Advance(at_depth[node.depth - 1], node.byte);
    if (s == StackArena::kEmptySet) {
      i = static_cast<size_t>(node.subtree_end);
      continue;
    }
    at_depth[node.depth] = s;
    if (node.tokens_begin != node.tokens_end) {
      const bool decided = arena.Decided(s);
      for (int32_t k = node.tokens_begin; k < node.tokens_end; ++k) {
        const int32_t t = v.trie_tokens()[k];
        if (decided) {
          MaskSet(out->accepted, t);
        } else {
          out->undecided.push_back(t);
        }
      }
    }
    ++i;
  }
  out->overflowed = arena.overflowed();
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = cache_.try_emplace(key, std::move(out));
  return it->second;
}

// --- GrammarMatcher ---

GrammarMatcher::GrammarMatcher(std::shared_ptr<const CompiledGrammar> grammar)
    : grammar_(std::move(grammar)), arena_(grammar_->grammar()) {
  state_ = arena_.RootSet(grammar_->grammar().root);
}

bool GrammarMatcher::CanEnd() const {
  const std::vector<int32_t>& m = arena_.Members(state_);
  return std::binary_search(m.begin(), m.end(), StackArena::kComplete);
}

bool GrammarMatcher::MustEnd() const {
  const std::vector<int32_t>& m = arena_.Members(state_);
  return m.size() == 1 && m[0] == StackArena::kComplete;
}

const std::string& GrammarMatcher::BytesOf(int32_t token) const {
  const TokenVocabulary& v = grammar_->vocab();
  return accepted_ == 0 && v.first_differs() ? v.first_bytes(token) : v.bytes(token);
}

// The first token of a SentencePiece output: its bytes differ from the cached ones, so scan.
void GrammarMatcher::FillMaskByScan(TokenMask* mask) {
  const TokenVocabulary& v = grammar_->vocab();
  for (int32_t t = 0; t < v.size(); ++t) {
    // A token that writes nothing here would not advance the grammar: keep it out.
    const std::string& b = BytesOf(t);
    if (b.empty() || v.bytes(t).empty()) continue;
    if (arena_.Walk(state_, b) != StackArena::kEmptySet) MaskSet(*mask, t);
  }
}

void GrammarMatcher::FillMask(TokenMask* mask) {
  const TokenVocabulary& v = grammar_->vocab();
  mask->assign((static_cast<size_t>(v.size()) + 31) / 32, 0);
  if (accepted_ == 0 && v.first_differs()) {
    FillMaskByScan(mask);
    return;
  }
  new_contexts_ = 0;
  // Stacks grouped by what lies below their tops: the alternatives a rule has just expanded into
  // share it, and one cached walk of the vocabulary serves them all.
  std::vector<std::pair<int32_t, int32_t>> by_parent;  // (parent, stack)
  for (int32_t stack : arena_.Members(state_)) {
    if (stack >= 0) by_parent.emplace_back(arena_.ParentOf(stack), stack);
  }
  std::sort(by_parent.begin(), by_parent.end());
  std::vector<int32_t> group;
  for (size_t i = 0; i < by_parent.size() && !overflowed_;) {
    group.clear();
    const int32_t parent = by_parent[i].first;
    for (; i < by_parent.size() && by_parent[i].first == parent; ++i) {
      group.push_back(by_parent[i].second);
    }
    const auto tokens = TokensFor(parent, group);
    overflowed_ |= tokens->overflowed;
    uint32_t* out = mask->data();
    const uint32_t* in = tokens->accepted.data();
    for (size_t w = 0; w < mask->size(); ++w) out[w] |= in[w];
    if (tokens->undecided.empty()) continue;
    const int32_t stacks = arena_.SetOf(group);
    for (int32_t t : tokens->undecided) {
      if (MaskTest(*mask, t)) continue;
      if (arena_.Walk(stacks, v.bytes(t)) != StackArena::kEmptySet) MaskSet(*mask, t);
    }
  }
}

int32_t GrammarMatcher::StateAfter(int32_t token) {
  if (token < 0 || token >= grammar_->vocab().size()) return StackArena::kEmptySet;
  const std::string& b = BytesOf(token);
  if (b.empty() || grammar_->vocab().bytes(token).empty()) return StackArena::kEmptySet;
  return arena_.Walk(state_, b);
}

bool GrammarMatcher::Allows(int32_t token) { return StateAfter(token) != StackArena::kEmptySet; }

std::shared_ptr<const CompiledGrammar::PositionTokens> GrammarMatcher::TokensFor(
    int32_t parent, const std::vector<int32_t>& stacks) {
  std::vector<int32_t> key{static_cast<int32_t>(stacks.size())};
  for (int32_t s : stacks) key.push_back(arena_.ElementOf(s));
  std::sort(key.begin() + 1, key.end());
  int32_t node = parent;
  size_t frames = 0;
  std::shared_ptr<const CompiledGrammar::PositionTokens> tokens;
  for (int depth : kFrameSteps) {
    for (; node >= 0 && static_cast<int>(frames) < depth; ++frames) {
      key.push_back(arena_.ElementOf(node));
      node = arena_.ParentOf(node);
    }
    if (node == StackArena::kComplete) key.push_back(StackArena::kComplete);
    bool computed = false;
    tokens = grammar_->TokensAt(key, &computed);
    if (computed && ++new_contexts_ > kMaxNewContextsPerMask) overflowed_ = true;
    if (tokens->whole_stack || tokens->undecided.size() <= kMaxUndecided) break;
  }
  return tokens;
}

absl::Status GrammarMatcher::Accept(int32_t token) {
  const int32_t next = StateAfter(token);
  if (next == StackArena::kEmptySet) {
    return absl::InvalidArgumentError(
        absl::StrCat("token ", token, " does not continue the constrained output"));
  }
  state_ = next;
  ++accepted_;
  return absl::OkStatus();
}

}  // namespace switchyard::grammar
