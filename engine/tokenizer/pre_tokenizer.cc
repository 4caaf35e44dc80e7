#include "engine/tokenizer/pre_tokenizer.h"

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/tokenizer/regex.h"
#include "engine/tokenizer/utf8.h"

namespace switchyard {
namespace {

// GPT-2's pattern, which ByteLevel applies when use_regex is set.
constexpr absl::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

void SplitIsolated(const Regex& re, std::vector<std::string>* pieces, bool removed, bool invert) {
  std::vector<std::string> out;
  std::vector<std::pair<size_t, size_t>> m;
  for (const std::string& piece : *pieces) {
    re.FindAll(piece, &m);
    if (invert) {
      for (const auto& [b, e] : m) out.push_back(piece.substr(b, e - b));
      continue;
    }
    size_t prev = 0;
    for (const auto& [b, e] : m) {
      if (b > prev) out.push_back(piece.substr(prev, b - prev));
      if (!removed) out.push_back(piece.substr(b, e - b));
      prev = e;
    }
    if (prev < piece.size()) out.push_back(piece.substr(prev));
  }
  *pieces = std::move(out);
}

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> re, bool removed, bool invert)
      : re_(std::move(re)), removed_(removed), invert_(invert) {}
  void Split(std::vector<std::string>* pieces, int) const override {
    SplitIsolated(*re_, pieces, removed_, invert_);
  }

 private:
  std::unique_ptr<Regex> re_;
  bool removed_, invert_;
};

class ByteLevel final : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, std::unique_ptr<Regex> re)
      : add_prefix_space_(add_prefix_space), re_(std::move(re)) {}
  void Split(std::vector<std::string>* pieces, int) const override {
    if (add_prefix_space_) {
      for (std::string& p : *pieces) {
        if (p.empty() || p[0] != ' ') p.insert(0, " ");
      }
    }
    if (re_) SplitIsolated(*re_, pieces, false, false);
    const std::vector<std::string>& alphabet = ByteLevelAlphabet();
    for (std::string& p : *pieces) {
      std::string mapped;
      mapped.reserve(p.size() * 2);
      for (const char c : p) mapped.append(alphabet[static_cast<unsigned char>(c)]);
      p = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> re_;
};

class Metaspace final : public PreTokenizer {
 public:
  enum class Prepend { kAlways, kFirst, kNever };
  Metaspace(std::string replacement, Prepend prepend, bool split)
      : replacement_(std::move(replacement)), prepend_(prepend), split_(split) {}
  void Split(std::vector<std::string>* pieces, int section_index) const override {
    std::vector<std::string> out;
    for (const std::string& p : *pieces) {
      std::string s;
      for (const char c : p) {
        if (c == ' ') {
          s.append(replacement_);
        } else {
          s.push_back(c);
        }
      }
      const bool starts = s.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts &&
          (prepend_ == Prepend::kAlways || (prepend_ == Prepend::kFirst && section_index == 0))) {
        s.insert(0, replacement_);
      }
      if (!split_) {
        out.push_back(std::move(s));
        continue;
      }
      // Each replacement character starts a new piece (MergedWithNext).
      size_t start = 0;
      for (size_t pos = s.find(replacement_, 1); pos != std::string::npos;
           pos = s.find(replacement_, pos + replacement_.size())) {
        out.push_back(s.substr(start, pos - start));
        start = pos;
      }
      out.push_back(s.substr(start));
    }
    *pieces = std::move(out);
  }

 private:
  std::string replacement_;
  Prepend prepend_;
  bool split_;
};

class Sequence final : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void Split(std::vector<std::string>* pieces, int section_index) const override {
    for (const auto& s : steps_) s->Split(pieces, section_index);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

}  // namespace

const std::vector<std::string>& ByteLevelAlphabet() {
  static const std::vector<std::string> alphabet = [] {
    std::vector<std::string> a(256);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      utf8::Append(static_cast<char32_t>(printable ? b : 256 + extra++), &a[b]);
    }
    return a;
  }();
  return alphabet;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> CreatePreTokenizer(const nlohmann::json& config) {
  if (config.is_null()) return std::unique_ptr<PreTokenizer>();
  const std::string type = config.value("type", "");
  if (type == "Split") {
    const nlohmann::json& p = config.value("pattern", nlohmann::json::object());
    std::unique_ptr<Regex> re;
    if (p.contains("Regex") && p["Regex"].is_string()) {
      SY_ASSIGN_OR_RETURN(re, Regex::Compile(p["Regex"].get<std::string>()));
    } else if (p.contains("String") && p["String"].is_string()) {
      SY_ASSIGN_OR_RETURN(re, Regex::Literal(p["String"].get<std::string>()));
    } else {
      return absl::InvalidArgumentError("tokenizer.json: Split pre-tokenizer without a pattern");
    }
    const std::string behavior = config.value("behavior", "Isolated");
    if (behavior != "Isolated" && behavior != "Removed") {
      return absl::UnimplementedError(
          absl::StrCat("tokenizer.json: Split behavior \"", behavior,
                       "\" is not supported (supported: Isolated, Removed)"));
    }
    return std::make_unique<SplitPreTokenizer>(std::move(re), behavior == "Removed",
                                               config.value("invert", false));
  }
  if (type == "ByteLevel") {
    std::unique_ptr<Regex> re;
    if (config.value("use_regex", true)) {
      SY_ASSIGN_OR_RETURN(re, Regex::Compile(kGpt2Pattern));
    }
    return std::make_unique<ByteLevel>(config.value("add_prefix_space", false), std::move(re));
  }
  if (type == "Metaspace") {
    std::string scheme = config.value("prepend_scheme", "");
    if (scheme.empty()) scheme = config.value("add_prefix_space", true) ? "always" : "never";
    Metaspace::Prepend prepend;
    if (scheme == "always") {
      prepend = Metaspace::Prepend::kAlways;
    } else if (scheme == "first") {
      prepend = Metaspace::Prepend::kFirst;
    } else if (scheme == "never") {
      prepend = Metaspace::Prepend::kNever;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: Metaspace prepend_scheme \"", scheme, "\" is unknown"));
    }
    return std::make_unique<Metaspace>(config.value("replacement", "\u2581"), prepend,
                                       config.value("split", true));
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (const auto& step : config.value("pretokenizers", nlohmann::json::array())) {
      SY_ASSIGN_OR_RETURN(auto p, CreatePreTokenizer(step));
      if (p) steps.push_back(std::move(p));
    }
    return std::make_unique<Sequence>(std::move(steps));
  }
  return absl::UnimplementedError(
      absl::StrCat("tokenizer.json: pre-tokenizer \"", type,
                   "\" is not supported (supported: Split, ByteLevel, Metaspace, Sequence)"));
}

}  // namespace switchyard
