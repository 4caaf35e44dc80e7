#include "engine/tokenizer/decoder.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/pre_tokenizer.h"

namespace switchyard {
namespace {

absl::Status Unsupported(absl::string_view what) {
  return absl::UnimplementedError(absl::StrCat(
      "tokenizer.json: decoder ", what,
      " is not supported (supported: ByteLevel; [Replace] [ByteFallback] [Metaspace] [Fuse] "
      "[Strip] in that order)"));
}

// The inverse of the byte-level alphabet, by code point (all below 0x144).
const std::vector<int>& ByteOfChar() {
  static const std::vector<int> table = [] {
    std::vector<int> t(0x200, -1);
    const auto& alphabet = ByteLevelAlphabet();
    for (int b = 0; b < 256; ++b) {
      size_t pos = 0;
      t[utf8::Next(alphabet[b], &pos)] = b;
    }
    return t;
  }();
  return table;
}

// A byte-level token's raw bytes: each alphabet character back to its byte (characters outside
// the alphabet pass through).
std::string ByteLevelBytes(absl::string_view token) {
  const std::vector<int>& byte_of = ByteOfChar();
  std::string bytes;
  for (size_t pos = 0; pos < token.size();) {
    const size_t start = pos;
    const char32_t cp = utf8::Next(token, &pos);
    if (cp < byte_of.size() && byte_of[cp] >= 0) {
      bytes.push_back(static_cast<char>(byte_of[cp]));
    } else {
      absl::StrAppend(&bytes, token.substr(start, pos - start));
    }
  }
  return bytes;
}

bool ParseByteToken(absl::string_view token, unsigned char* byte) {
  if (token.size() != 6 || token.substr(0, 3) != "<0x" || token[5] != '>') return false;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = token[i];
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return false;
    }
    v = v * 16 + d;
  }
  *byte = static_cast<unsigned char>(v);
  return true;
}

std::string StripChars(std::string s, absl::string_view c, int start, int stop) {
  size_t b = 0, e = s.size();
  const auto at = [&](size_t pos) { return absl::string_view(s).substr(pos, c.size()) == c; };
  for (int i = 0; i < start && e - b >= c.size() && at(b); ++i) b += c.size();
  for (int i = 0; i < stop && e - b >= c.size() && at(e - c.size()); ++i) e -= c.size();
  return s.substr(b, e - b);
}

// transformers' clean_up_tokenization, applied as its sequence of global replacements.
std::string CleanUp(absl::string_view text) {
  std::string s(text);
  for (const auto& [from, to] :
       std::initializer_list<std::pair<const char*, const char*>>{{" .", "."},
                                                                  {" ?", "?"},
                                                                  {" !", "!"},
                                                                  {" ,", ","},
                                                                  {" ' ", "'"},
                                                                  {" n't", "n't"},
                                                                  {" 'm", "'m"},
                                                                  {" 's", "'s"},
                                                                  {" 've", "'ve"},
                                                                  {" 're", "'re"}}) {
    s = absl::StrReplaceAll(s, {{from, to}});
  }
  return s;
}

}  // namespace

absl::StatusOr<DecoderSpec> ParseDecoder(const nlohmann::json& config) {
  DecoderSpec spec;
  if (config.is_null()) return spec;
  std::vector<nlohmann::json> steps;
  if (config.value("type", "") == "Sequence") {
    for (const auto& s : config.value("decoders", nlohmann::json::array())) steps.push_back(s);
  } else {
    steps.push_back(config);
  }
  enum Stage {
    kStart,
    kAfterByteFallback,
    kAfterMetaspace,
    kAfterFuse,
    kAfterStrip
  } stage = kStart;
  for (const nlohmann::json& s : steps) {
    const std::string type = s.value("type", "");
    if (type == "ByteLevel") {
      if (steps.size() != 1) return Unsupported("ByteLevel inside a Sequence");
      spec.byte_level = true;
    } else if (type == "Replace") {
      const nlohmann::json& p = s.value("pattern", nlohmann::json::object());
      if (!p.contains("String") || !p["String"].is_string() ||
          p["String"].get<std::string>().empty()) {
        return Unsupported("Replace with a regex pattern");
      }
      DecoderSpec::Replace r{p["String"].get<std::string>(), s.value("content", "")};
      if (stage == kStart) {
        spec.before_byte_fallback.push_back(std::move(r));
      } else if (stage == kAfterByteFallback) {
        spec.after_byte_fallback.push_back(std::move(r));
      } else {
        return Unsupported("Replace after Metaspace or Fuse");
      }
    } else if (type == "ByteFallback") {
      if (stage != kStart) return Unsupported("ByteFallback after another step");
      spec.byte_fallback = true;
      stage = kAfterByteFallback;
    } else if (type == "Metaspace") {
      if (stage > kAfterByteFallback) return Unsupported("Metaspace after Fuse");
      spec.metaspace = true;
      spec.metaspace_replacement = s.value("replacement", "\u2581");
      std::string scheme = s.value("prepend_scheme", "");
      if (scheme.empty()) scheme = s.value("add_prefix_space", true) ? "always" : "never";
      spec.metaspace_strip_first = scheme != "never";
      stage = kAfterMetaspace;
    } else if (type == "Fuse") {
      if (stage >= kAfterFuse) return Unsupported("Fuse twice or after Strip");
      spec.fuse = true;
      stage = kAfterFuse;
    } else if (type == "Strip") {
      if (stage == kAfterStrip) return Unsupported("two Strip steps");
      spec.strip_char = s.value("content", " ");
      spec.strip_start = s.value("start", 0);
      spec.strip_stop = s.value("stop", 0);
      if (spec.strip_start < 0 || spec.strip_stop < 0)
        return Unsupported("Strip with negative counts");
      if (!spec.fuse && stage != kStart && stage != kAfterByteFallback &&
          stage != kAfterMetaspace) {
        return Unsupported("Strip in this position");
      }
      stage = kAfterStrip;
    } else {
      return Unsupported(absl::StrCat("\"", type, "\""));
    }
  }
  return spec;
}

absl::StatusOr<TokenByteTable> BuildTokenByteTable(const DecoderSpec& spec,
                                                   const TokenSource& source, int32_t vocab_size) {
  if (!spec.fuse && (spec.strip_start > 0 || spec.strip_stop > 0)) {
    return absl::FailedPreconditionError("the tokenizer strips every token while decoding");
  }
  if (spec.strip_stop > 0 || spec.strip_start > 1 ||
      (spec.strip_start == 1 && spec.strip_char != " ")) {
    return absl::FailedPreconditionError("the tokenizer's Strip decoder is not supported here");
  }
  TokenByteTable table;
  table.bytes.resize(static_cast<size_t>(vocab_size));
  const bool first_differs =
      spec.strip_start == 1 || (spec.metaspace && spec.metaspace_strip_first);
  if (first_differs) table.first_bytes.resize(static_cast<size_t>(vocab_size));
  for (int32_t id = 0; id < vocab_size; ++id) {
    absl::string_view token;
    bool added = false, special = false;
    if (!source.Lookup(id, &token, &added, &special) || special) continue;
    std::string& out = table.bytes[id];
    std::optional<std::string> first;  // when the first token writes something else
    if (added) {
      out.assign(token.data(), token.size());
    } else if (spec.byte_level) {
      out = ByteLevelBytes(token);
    } else {
      std::string t(token);
      for (const auto& r : spec.before_byte_fallback) t = absl::StrReplaceAll(t, {{r.from, r.to}});
      unsigned char byte;
      if (spec.byte_fallback && ParseByteToken(t, &byte)) {
        out.assign(1, static_cast<char>(byte));
      } else {
        for (const auto& r : spec.after_byte_fallback) {
          t = absl::StrReplaceAll(t, {{r.from, r.to}});
        }
        if (spec.metaspace) {
          // As DecodeStream::EmitToken: the first token loses its replacement characters.
          if (spec.metaspace_strip_first) {
            first = absl::StrReplaceAll(t, {{spec.metaspace_replacement, ""}});
          }
          t = absl::StrReplaceAll(t, {{spec.metaspace_replacement, " "}});
        }
        out = std::move(t);
      }
    }
    if (!first_differs) continue;
    std::string& f = table.first_bytes[id];
    f = first.value_or(out);
    if (spec.strip_start == 1 && !f.empty() && f[0] == ' ') f.erase(0, 1);
  }
  return table;
}

DecodeStream::DecodeStream(const DecoderSpec& spec, const TokenSource& source, bool skip_special,
                           bool clean_up_spaces)
    : spec_(spec),
      source_(source),
      skip_special_(skip_special),
      clean_up_(spec.clean_up_spaces && clean_up_spaces),
      strip_start_left_(spec.fuse ? spec.strip_start : 0) {}

void DecodeStream::Push(int32_t id, std::string* out) {
  absl::string_view token;
  bool added = false, special = false;
  if (!source_.Lookup(id, &token, &added, &special)) return;
  if (skip_special_ && special) return;

  if (spec_.byte_level) {
    std::string text;
    if (added) {
      lossy_.Finish(&text);  // an added token ends any open sequence, as in Hugging Face
      absl::StrAppend(&text, token);
    } else {
      lossy_.Push(ByteLevelBytes(token), &text);
    }
    EmitText(text, out);
    return;
  }

  std::string t(token);
  for (const auto& r : spec_.before_byte_fallback) t = absl::StrReplaceAll(t, {{r.from, r.to}});
  unsigned char byte;
  if (spec_.byte_fallback && ParseByteToken(t, &byte)) {
    byte_run_.push_back(static_cast<char>(byte));
    return;
  }
  FlushByteRun(out);
  EmitToken(std::move(t), out);
}

void DecodeStream::FlushByteRun(std::string* out) {
  if (byte_run_.empty()) return;
  std::string s;
  if (utf8::FirstInvalid(byte_run_) == absl::string_view::npos) {
    s = byte_run_;
  } else {
    for (size_t i = 0; i < byte_run_.size(); ++i) absl::StrAppend(&s, utf8::kReplacement);
  }
  byte_run_.clear();
  EmitToken(std::move(s), out);
}

// One token leaving the byte-fallback stage: per-token steps, then the fused text.
void DecodeStream::EmitToken(std::string t, std::string* out) {
  for (const auto& r : spec_.after_byte_fallback) t = absl::StrReplaceAll(t, {{r.from, r.to}});
  if (spec_.metaspace) {
    const bool first = tokens_out_ == 0 && spec_.metaspace_strip_first;
    t = absl::StrReplaceAll(t, {{spec_.metaspace_replacement, first ? "" : " "}});
  }
  ++tokens_out_;
  if (!spec_.fuse && (spec_.strip_start > 0 || spec_.strip_stop > 0)) {
    t = StripChars(std::move(t), spec_.strip_char, spec_.strip_start, spec_.strip_stop);
  }
  EmitText(t, out);
}

// Text of the fused stream: leading/trailing Strip of the whole text, then clean-up.
void DecodeStream::EmitText(absl::string_view text, std::string* out) {
  std::string s(text);
  if (spec_.fuse && !spec_.strip_char.empty()) {
    const absl::string_view c = spec_.strip_char;
    const auto at = [&](size_t pos) { return absl::string_view(s).substr(pos, c.size()) == c; };
    size_t b = 0;
    while (strip_start_left_ > 0 && s.size() - b >= c.size() && at(b)) {
      b += c.size();
      --strip_start_left_;
    }
    if (b < s.size()) strip_start_left_ = 0;  // something else came first: stop stripping
    s.erase(0, b);
    if (spec_.strip_stop > 0 && !s.empty()) {
      s = trailing_held_ + s;
      trailing_held_.clear();
      // Hold back up to strip_stop trailing strip characters: only Finish knows they trail.
      for (int i = 0; i < spec_.strip_stop && s.size() >= c.size() && at(s.size() - c.size());
           ++i) {
        trailing_held_.insert(0, spec_.strip_char);
        s.resize(s.size() - c.size());
      }
    }
  }
  EmitCleaned(s, out, false);
}

// Clean-up replaces patterns of at most 4 bytes that start with a space. A cut with three
// non-space bytes before it is one no pattern can straddle, so text up to the last such cut is
// cleaned and emitted; the rest waits.
void DecodeStream::EmitCleaned(absl::string_view text, std::string* out, bool final) {
  if (!clean_up_) {
    absl::StrAppend(out, text);
    return;
  }
  absl::StrAppend(&cleanup_held_, text);
  if (final) {
    out->append(CleanUp(cleanup_held_));
    cleanup_held_.clear();
    return;
  }
  const auto is_cut = [&](size_t c) {
    const auto continuation = [&](size_t i) {
      return (static_cast<unsigned char>(cleanup_held_[i]) & 0xC0) == 0x80;
    };
    return c >= 3 && cleanup_held_[c - 1] != ' ' && cleanup_held_[c - 2] != ' ' &&
           cleanup_held_[c - 3] != ' ' && (c == cleanup_held_.size() || !continuation(c));
  };
  size_t cut = cleanup_held_.size();
  while (cut >= 3 && !is_cut(cut)) --cut;
  if (cut < 3) return;
  out->append(CleanUp(absl::string_view(cleanup_held_).substr(0, cut)));
  cleanup_held_.erase(0, cut);
}

void DecodeStream::Finish(std::string* out) {
  if (spec_.byte_level) {
    std::string text;
    lossy_.Finish(&text);
    EmitText(text, out);
  } else {
    FlushByteRun(out);
  }
  trailing_held_.clear();  // trailing strip characters: stripped
  EmitCleaned("", out, true);
}

}  // namespace switchyard
