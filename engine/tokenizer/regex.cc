#include "engine/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cctype>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/utf8.h"

namespace switchyard {

struct Regex::Impl {
  pcre2_code* code = nullptr;
  ~Impl() {
    if (code != nullptr) pcre2_code_free(code);
  }
};

Regex::~Regex() = default;

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(absl::string_view pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(absl::StrCat("regex /", pattern, "/ at offset ", offset, ": ",
                                                   reinterpret_cast<char*>(message)));
  }
  // JIT is an optimisation; the interpreter gives the same matches when it is unavailable.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  std::unique_ptr<Regex> r(new Regex());
  r->impl_ = std::make_unique<Impl>();
  r->impl_->code = code;
  return r;
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::Literal(absl::string_view literal) {
  std::string escaped;
  for (const char c : literal) {
    // A backslash before any ASCII non-alphanumeric character makes it literal in PCRE2.
    if (static_cast<unsigned char>(c) < 0x80 && !std::isalnum(static_cast<unsigned char>(c))) {
      escaped.push_back('\\');
    }
    escaped.push_back(c);
  }
  return Compile(escaped);
}

void Regex::FindAll(absl::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const {
  matches->clear();
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(impl_->code, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start <= text.size()) {
    const int rc =
        pcre2_match(impl_->code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc < 0) break;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t b = ov[0], e = ov[1];
    if (e > b) {
      matches->emplace_back(b, e);
      start = e;
    } else {
      if (b >= text.size()) break;
      size_t next = b;
      utf8::Next(text, &next);
      start = next;
    }
  }
  pcre2_match_data_free(md);
}

}  // namespace switchyard
