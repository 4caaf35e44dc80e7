#include "engine/tokenizer/bpe.h"

#include <queue>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/tokenizer/utf8.h"

namespace switchyard {
namespace {

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Create(const nlohmann::json& model) {
  const std::string type = model.value("type", "BPE");
  if (type != "BPE") {
    return absl::UnimplementedError(absl::StrCat("tokenizer.json: model type \"", type,
                                                 "\" is not supported (supported: BPE)"));
  }
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: model.vocab must be an object");
  }
  if (model.contains("dropout") && model["dropout"].is_number() &&
      model["dropout"].get<double>() > 0) {
    return absl::UnimplementedError("tokenizer.json: BPE dropout is a training feature");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty()) {
      return absl::UnimplementedError(
          absl::StrCat("tokenizer.json: BPE ", key, " is not supported"));
    }
  }
  std::unique_ptr<BpeModel> m(new BpeModel());
  int32_t max_id = -1;
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > (1 << 24)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: vocab entry \"", it.key(), "\" has a bad id"));
    }
    const int32_t id = it.value().get<int32_t>();
    m->vocab_[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  m->id_to_token_.resize(static_cast<size_t>(max_id + 1));
  for (const auto& [token, id] : m->vocab_) m->id_to_token_[id] = token;

  m->bmp_char_id_.assign(0x10000, -1);
  for (const auto& [token, id] : m->vocab_) {
    if (token.empty() || utf8::FirstInvalid(token) != absl::string_view::npos) continue;
    size_t pos = 0;
    const char32_t cp = utf8::Next(token, &pos);
    if (pos == token.size() && cp < 0x10000) m->bmp_char_id_[cp] = id;
  }

  const nlohmann::json& merges = model.value("merges", nlohmann::json::array());
  int32_t rank = 0;
  for (const auto& entry : merges) {
    std::string a, b;
    if (entry.is_string()) {  // legacy "a b"
      const std::string s = entry.get<std::string>();
      const size_t sp = s.find(' ', 1);
      if (sp == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: bad merge \"", s, "\""));
      }
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() &&
               entry[1].is_string()) {
      a = entry[0].get<std::string>();
      b = entry[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: merge ", rank, " is neither \"a b\" nor [a, b]"));
    }
    const int32_t ia = m->TokenToId(a), ib = m->TokenToId(b), inew = m->TokenToId(a + b);
    if (ia < 0 || ib < 0 || inew < 0) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: merge \"", a, " ", b,
                                                     "\" uses or makes a token not in the vocab"));
    }
    m->merges_.try_emplace(PairKey(ia, ib), Merge{rank, inew});
    ++rank;
  }

  m->ignore_merges_ = model.value("ignore_merges", false);
  m->byte_fallback_ = model.value("byte_fallback", false);
  m->fuse_unk_ = model.value("fuse_unk", false);
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    m->unk_id_ = m->TokenToId(model["unk_token"].get<std::string>());
  }
  for (int b = 0; b < 256; ++b) {
    m->byte_fallback_id_[b] = m->TokenToId(absl::StrFormat("<0x%02X>", b));
  }
  return m;
}

int32_t BpeModel::TokenToId(absl::string_view token) const {
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

absl::string_view BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(id_to_token_.size())) return {};
  return id_to_token_[id];
}

int32_t BpeModel::CharId(char32_t cp, absl::string_view text) const {
  if (cp < 0x10000) return bmp_char_id_[cp];
  return TokenToId(text);
}

void BpeModel::Tokenize(absl::string_view piece, std::vector<int32_t>* ids) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    if (const int32_t id = TokenToId(piece); id >= 0) {
      ids->push_back(id);
      return;
    }
  }
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  const auto push = [&](int32_t id) {
    const int32_t n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1, true});
  };
  bool last_unk = false;
  for (size_t pos = 0; pos < piece.size();) {
    const size_t start = pos;
    const char32_t cp = utf8::Next(piece, &pos);
    const absl::string_view ch = piece.substr(start, pos - start);
    const int32_t id = CharId(cp, ch);
    if (id >= 0) {
      push(id);
      last_unk = false;
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (const char c : ch) all &= byte_fallback_id_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        for (const char c : ch) push(byte_fallback_id_[static_cast<unsigned char>(c)]);
        last_unk = false;
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (!(fuse_unk_ && last_unk)) push(unk_id_);
      last_unk = true;
    }
  }
  const int32_t n = static_cast<int32_t>(symbols.size());
  if (n == 0) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank, pos, new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  const auto consider = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    auto it = merges_.find(PairKey(symbols[pos].id, symbols[next].id));
    if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.new_id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    // Stale entries: the pair at this position has changed since it was queued.
    auto it = merges_.find(PairKey(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

}  // namespace switchyard
