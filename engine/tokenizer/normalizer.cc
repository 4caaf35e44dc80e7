#include "engine/tokenizer/normalizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/tokenizer/regex.h"
#include "engine/tokenizer/utf8.h"

namespace switchyard {
namespace {

class UnicodeForm final : public Normalizer {
 public:
  explicit UnicodeForm(int options) : options_(options) {}
  void Normalize(std::string* text) const override {
    bool ascii = true;
    for (const char c : *text) ascii &= static_cast<unsigned char>(c) < 0x80;
    if (ascii) return;  // every form leaves ASCII alone
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text->data()),
                                            static_cast<utf8proc_ssize_t>(text->size()), &out,
                                            static_cast<utf8proc_option_t>(options_));
    if (n >= 0) text->assign(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
    std::free(out);
  }

 private:
  int options_;
};

class Lowercase final : public Normalizer {
 public:
  void Normalize(std::string* text) const override {
    std::string out;
    out.reserve(text->size());
    for (size_t i = 0; i < text->size();) {
      utf8::Append(static_cast<char32_t>(utf8proc_tolower(utf8::Next(*text, &i))), &out);
    }
    *text = std::move(out);
  }
};

class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  void Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class Replace final : public Normalizer {
 public:
  Replace(std::unique_ptr<Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Normalize(std::string* text) const override {
    std::vector<std::pair<size_t, size_t>> m;
    pattern_->FindAll(*text, &m);
    if (m.empty()) return;
    std::string out;
    size_t prev = 0;
    for (const auto& [b, e] : m) {
      out.append(*text, prev, b - prev);
      out.append(content_);
      prev = e;
    }
    out.append(*text, prev, std::string::npos);
    *text = std::move(out);
  }

 private:
  std::unique_ptr<Regex> pattern_;
  std::string content_;
};

class Strip final : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void Normalize(std::string* text) const override {
    size_t b = 0, e = text->size();
    // Whitespace as Unicode White_Space, over code points.
    const auto is_space = [](char32_t c) {
      return c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
             (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
             c == 0x205F || c == 0x3000;
    };
    if (left_) {
      while (b < e) {
        size_t p = b;
        if (!is_space(utf8::Next(*text, &p))) break;
        b = p;
      }
    }
    if (right_) {
      while (e > b) {
        size_t start = e - 1;
        while (start > b && (static_cast<unsigned char>((*text)[start]) & 0xC0) == 0x80) --start;
        size_t p = start;
        if (!is_space(utf8::Next(*text, &p))) break;
        e = start;
      }
    }
    *text = text->substr(b, e - b);
  }

 private:
  bool left_, right_;
};

class Sequence final : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  void Normalize(std::string* text) const override {
    for (const auto& s : steps_) s->Normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

absl::StatusOr<std::unique_ptr<Regex>> PatternOf(const nlohmann::json& config,
                                                 absl::string_view where) {
  const nlohmann::json& p = config.value("pattern", nlohmann::json::object());
  if (p.contains("String") && p["String"].is_string()) {
    return Regex::Literal(p["String"].get<std::string>());
  }
  if (p.contains("Regex") && p["Regex"].is_string()) {
    return Regex::Compile(p["Regex"].get<std::string>());
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": pattern must be {\"String\": ...} or {\"Regex\": ...}"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> CreateNormalizer(const nlohmann::json& config) {
  if (config.is_null()) return std::unique_ptr<Normalizer>();
  const std::string type = config.value("type", "");
  if (type == "NFC") return std::make_unique<UnicodeForm>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  if (type == "NFD") return std::make_unique<UnicodeForm>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
  if (type == "NFKC") {
    return std::make_unique<UnicodeForm>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  }
  if (type == "NFKD") {
    return std::make_unique<UnicodeForm>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  }
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Prepend") return std::make_unique<Prepend>(config.value("prepend", ""));
  if (type == "Strip") {
    return std::make_unique<Strip>(config.value("strip_left", true),
                                   config.value("strip_right", true));
  }
  if (type == "Replace") {
    SY_ASSIGN_OR_RETURN(auto pattern, PatternOf(config, "normalizer Replace"));
    return std::make_unique<Replace>(std::move(pattern), config.value("content", ""));
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const auto& step : config.value("normalizers", nlohmann::json::array())) {
      SY_ASSIGN_OR_RETURN(auto n, CreateNormalizer(step));
      if (n) steps.push_back(std::move(n));
    }
    return std::make_unique<Sequence>(std::move(steps));
  }
  return absl::UnimplementedError(absl::StrCat(
      "tokenizer.json: normalizer \"", type,
      "\" is not supported (supported: NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip, "
      "Sequence)"));
}

}  // namespace switchyard
