#include "engine/tokenizer/tokenizer.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "engine/core/json_util.h"
#include "engine/core/status_macros.h"
#include "engine/tokenizer/utf8.h"

namespace switchyard {
namespace {

// Unicode White_Space, the set Rust's char::is_whitespace uses for lstrip/rstrip.
bool IsWhiteSpace(char32_t c) {
  return c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

void TrimEnd(std::string* s) {
  size_t e = s->size();
  while (e > 0) {
    size_t start = e - 1;
    while (start > 0 && (static_cast<unsigned char>((*s)[start]) & 0xC0) == 0x80) --start;
    size_t p = start;
    if (!IsWhiteSpace(utf8::Next(*s, &p))) break;
    e = start;
  }
  s->resize(e);
}

void TrimStart(std::string* s) {
  size_t b = 0;
  while (b < s->size()) {
    size_t p = b;
    if (!IsWhiteSpace(utf8::Next(*s, &p))) break;
    b = p;
  }
  s->erase(0, b);
}

// A special-token setting of tokenizer_config.json: a string or an AddedToken object.
std::string TokenString(const nlohmann::json& config, const char* key) {
  if (!config.contains(key)) return "";
  const nlohmann::json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& dir) {
  SY_ASSIGN_OR_RETURN(std::string tokenizer, ReadFile(dir + "/tokenizer.json"));
  std::string config;
  if (std::filesystem::exists(dir + "/tokenizer_config.json")) {
    SY_ASSIGN_OR_RETURN(config, ReadFile(dir + "/tokenizer_config.json"));
  }
  SY_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, FromJson(tokenizer, config));
  // transformers saves the template beside the config since 4.43 and prefers that file.
  if (std::filesystem::exists(dir + "/chat_template.jinja")) {
    SY_ASSIGN_OR_RETURN(tok->chat_template_, ReadFile(dir + "/chat_template.jinja"));
  }
  return tok;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(absl::string_view tokenizer_json,
                                                               absl::string_view config_json) {
  // The component builders read fields with nlohmann's typed accessors, which throw on a value
  // of the wrong type: such a file is malformed, not a reason to terminate.
  try {
    return FromJsonUnguarded(tokenizer_json, config_json);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer.json / tokenizer_config.json: a field has the wrong type (", e.what(), ")"));
  }
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJsonUnguarded(
    absl::string_view tokenizer_json, absl::string_view config_json) {
  SY_ASSIGN_OR_RETURN(nlohmann::json t, json_util::Parse(tokenizer_json, "tokenizer.json"));
  nlohmann::json config = nlohmann::json::object();
  if (!config_json.empty()) {
    SY_ASSIGN_OR_RETURN(config, json_util::Parse(config_json, "tokenizer_config.json"));
  }
  if (!t.is_object() || !t.contains("model") || !t["model"].is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: missing \"model\"");
  }
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  SY_ASSIGN_OR_RETURN(tok->model_, BpeModel::Create(t["model"]));
  SY_ASSIGN_OR_RETURN(tok->normalizer_, CreateNormalizer(t.value("normalizer", nlohmann::json())));
  SY_ASSIGN_OR_RETURN(tok->pre_tokenizer_,
                      CreatePreTokenizer(t.value("pre_tokenizer", nlohmann::json())));
  SY_ASSIGN_OR_RETURN(tok->decoder_, ParseDecoder(t.value("decoder", nlohmann::json())));

  tok->vocab_size_ = tok->model_->vocab_size();
  tok->added_by_first_byte_.resize(256);
  for (const auto& a : t.value("added_tokens", nlohmann::json::array())) {
    if (!a.is_object() || !a.contains("content") || !a["content"].is_string() ||
        !a.contains("id") || !a["id"].is_number_integer()) {
      return absl::InvalidArgumentError("tokenizer.json: an added token lacks content or id");
    }
    AddedToken at;
    at.content = a["content"].get<std::string>();
    at.id = a["id"].get<int32_t>();
    if (at.content.empty() || at.id < 0 || at.id > (1 << 24)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: added token \"", at.content, "\" is malformed"));
    }
    at.special = a.value("special", false);
    at.lstrip = a.value("lstrip", false);
    at.rstrip = a.value("rstrip", false);
    at.normalized = a.value("normalized", !at.special);
    if (at.special) tok->special_ids_.insert(at.id);
    tok->vocab_size_ = std::max(tok->vocab_size_, at.id + 1);
    tok->added_by_id_[at.id] = tok->added_.size();
    tok->added_.push_back(std::move(at));
  }
  // A normalized added token is matched in normalized text, by its normalized form.
  for (size_t i = 0; i < tok->added_.size(); ++i) {
    AddedToken& a = tok->added_[i];
    a.normalized = a.normalized && tok->normalizer_ != nullptr;
    a.match = a.content;
    if (a.normalized) tok->normalizer_->Normalize(&a.match);
    if (!a.match.empty()) {
      tok->added_by_first_byte_[static_cast<unsigned char>(a.match[0])].push_back(i);
    }
  }

  const nlohmann::json& post = t.value("post_processor", nlohmann::json());
  std::vector<nlohmann::json> posts;
  if (!post.is_null()) {
    if (post.value("type", "") == "Sequence") {
      for (const auto& p : post.value("processors", nlohmann::json::array())) posts.push_back(p);
    } else {
      posts.push_back(post);
    }
  }
  for (const nlohmann::json& p : posts) {
    const std::string type = p.value("type", "");
    if (type == "ByteLevel") continue;  // only adjusts offsets
    if (type != "TemplateProcessing") {
      return absl::UnimplementedError(
          absl::StrCat("tokenizer.json: post-processor \"", type,
                       "\" is not supported (supported: TemplateProcessing, ByteLevel, Sequence)"));
    }
    bool after = false;
    for (const auto& item : p.value("single", nlohmann::json::array())) {
      if (item.contains("Sequence")) {
        after = true;
        continue;
      }
      if (!item.contains("SpecialToken")) continue;
      const std::string name = item["SpecialToken"].value("id", "");
      const nlohmann::json& st = p.value("special_tokens", nlohmann::json::object());
      if (!st.contains(name) || !st[name].contains("ids") || !st[name]["ids"].is_array()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tokenizer.json: TemplateProcessing names special token \"", name, "\" without ids"));
      }
      for (const auto& id : st[name]["ids"]) {
        (after ? tok->template_suffix_ : tok->template_prefix_).push_back(id.get<int32_t>());
      }
    }
  }
  SY_RETURN_IF_ERROR(tok->Configure(config));
  return tok;
}

absl::Status Tokenizer::Configure(const nlohmann::json& config) {
  bos_token_ = TokenString(config, "bos_token");
  eos_token_ = TokenString(config, "eos_token");
  if (!bos_token_.empty()) bos_id_ = TokenToId(bos_token_);
  if (!eos_token_.empty()) eos_id_ = TokenToId(eos_token_);
  // transformers' default for clean_up_tokenization_spaces is true when the config is silent.
  decoder_.clean_up_spaces = config.value("clean_up_tokenization_spaces", true) == true;
  for (const auto& s : config.value("additional_special_tokens", nlohmann::json::array())) {
    std::string name = s.is_string() ? s.get<std::string>() : s.value("content", "");
    if (auto id = TokenToId(name)) special_ids_.insert(*id);
  }
  if (config.contains("chat_template")) {
    const nlohmann::json& ct = config["chat_template"];
    if (ct.is_string()) {
      chat_template_ = ct.get<std::string>();
    } else if (ct.is_array()) {
      for (const auto& named : ct) {
        if (named.value("name", "") == "default" && named.contains("template")) {
          chat_template_ = named["template"].get<std::string>();
        }
      }
    }
  }
  return absl::OkStatus();
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  for (const AddedToken& a : added_) {
    if (a.content == token) return a.id;
  }
  const int32_t id = model_->TokenToId(token);
  if (id < 0) return std::nullopt;
  return id;
}

bool Tokenizer::Lookup(int32_t id, absl::string_view* token, bool* added, bool* special) const {
  if (auto it = added_by_id_.find(id); it != added_by_id_.end()) {
    *token = added_[it->second].content;
    *added = true;
    *special = added_[it->second].special || special_ids_.contains(id);
    return true;
  }
  *token = model_->IdToToken(id);
  *added = false;
  *special = special_ids_.contains(id);
  return !token->empty();
}

void Tokenizer::SplitAdded(absl::string_view text, bool normalized, bool parse_special,
                           std::vector<Section>* out) const {
  const size_t first = out->size();
  size_t start = 0, i = 0;
  while (i < text.size()) {
    int best = -1;
    size_t best_len = 0;
    for (size_t idx : added_by_first_byte_[static_cast<unsigned char>(text[i])]) {
      const AddedToken& a = added_[idx];
      if (a.normalized != normalized || (a.special && !parse_special)) continue;
      if (a.match.size() > best_len && text.substr(i, a.match.size()) == a.match) {
        best = static_cast<int>(idx);
        best_len = a.match.size();
      }
    }
    if (best < 0) {
      ++i;
      continue;
    }
    if (i > start) out->push_back({std::string(text.substr(start, i - start)), -1});
    out->push_back({added_[best].content, added_[best].id});
    i += best_len;
    start = i;
  }
  if (start < text.size()) out->push_back({std::string(text.substr(start)), -1});
  for (size_t k = first; k < out->size(); ++k) {
    const Section& s = (*out)[k];
    if (s.added_id < 0) continue;
    const AddedToken& a = added_[added_by_id_.at(s.added_id)];
    if (a.lstrip && k > first && (*out)[k - 1].added_id < 0) TrimEnd(&(*out)[k - 1].text);
    if (a.rstrip && k + 1 < out->size() && (*out)[k + 1].added_id < 0) {
      TrimStart(&(*out)[k + 1].text);
    }
  }
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(absl::string_view text,
                                                       const EncodeOptions& options) const {
  if (const size_t bad = utf8::FirstInvalid(text); bad != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("text is not valid UTF-8 (at byte ", bad, ")"));
  }
  std::vector<int32_t> ids;
  if (options.add_special_tokens) ids = template_prefix_;
  std::vector<Section> sections, sub;
  SplitAdded(text, /*normalized=*/false, options.parse_special, &sections);
  std::vector<std::string> pieces;
  for (size_t si = 0; si < sections.size(); ++si) {
    Section& section = sections[si];
    if (section.added_id >= 0) {
      ids.push_back(section.added_id);
      continue;
    }
    if (section.text.empty()) continue;
    if (normalizer_) normalizer_->Normalize(&section.text);
    if (section.text.empty()) continue;
    sub.clear();
    SplitAdded(section.text, /*normalized=*/true, options.parse_special, &sub);
    for (Section& s : sub) {
      if (s.added_id >= 0) {
        ids.push_back(s.added_id);
        continue;
      }
      if (s.text.empty()) continue;
      pieces.clear();
      pieces.push_back(std::move(s.text));
      if (pre_tokenizer_) pre_tokenizer_->Split(&pieces, static_cast<int>(si));
      for (const std::string& piece : pieces) model_->Tokenize(piece, &ids);
    }
  }
  if (options.add_special_tokens) {
    ids.insert(ids.end(), template_suffix_.begin(), template_suffix_.end());
  }
  return ids;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string out;
  DecodeStream stream = NewDecodeStream(skip_special_tokens);
  for (int32_t id : ids) stream.Push(id, &out);
  stream.Finish(&out);
  return out;
}

}  // namespace switchyard
