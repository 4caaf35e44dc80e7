#include "engine/jinja/template.h"

#include <new>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/jinja/parser.h"

namespace switchyard::jinja {
namespace {

constexpr absl::string_view kRaisedPrefix = "the chat template refused the request: ";

absl::Status ToStatus(const Error& e) {
  switch (e.kind()) {
    case Error::Kind::kSyntax:
      return absl::InvalidArgumentError(absl::StrCat("chat template syntax error: ", e.what()));
    case Error::Kind::kRaised:
      return absl::InvalidArgumentError(absl::StrCat(kRaisedPrefix, e.what()));
    case Error::Kind::kLimit:
      return absl::InvalidArgumentError(e.what());
    case Error::Kind::kRender:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat("chat template error: ", e.what()));
}

}  // namespace

absl::StatusOr<Template> Template::Parse(absl::string_view source) {
  try {
    return Template(std::make_shared<const Body>(jinja::Parse(source)));
  } catch (const Error& e) {
    return ToStatus(e);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("chat template: out of memory while parsing");
  } catch (const std::exception& e) {
    // A defect of ours, not of the template: fail the one request, never the server.
    return absl::InternalError(absl::StrCat("chat template: internal error: ", e.what()));
  }
}

absl::StatusOr<std::string> Template::Render(std::vector<std::pair<std::string, Value>> variables,
                                             const RenderOptions& options) const {
  auto globals = std::make_shared<Scope>();
  for (auto& [name, value] : variables) globals->vars[name] = std::move(value);
  Interpreter interpreter(options.limits, options.now != 0 ? options.now : std::time(nullptr));
  try {
    return interpreter.Render(*body_, globals);
  } catch (const Error& e) {
    return ToStatus(e);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("chat template: out of memory while rendering");
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("chat template: internal error: ", e.what()));
  }
}

bool IsRaisedByTemplate(const absl::Status& status) {
  return absl::StartsWith(status.message(), kRaisedPrefix);
}

}  // namespace switchyard::jinja
