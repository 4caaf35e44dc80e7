// A Jinja2 template engine for chat templates: parse once, render many times. Output is byte for
// byte what Python's jinja2 renders in Hugging Face's environment (ImmutableSandboxedEnvironment
// with trim_blocks, lstrip_blocks and loop controls; tojson as json.dumps; raise_exception;
// strftime_now), which tests/reference checks on real models' templates.
//
// Errors are INVALID_ARGUMENT: a syntax error names the line; a render error names what failed;
// raise_exception(msg) gives msg; a template that exceeds its limits (steps, depth, sizes) says
// which. Nothing a template or its variables hold can crash or hang the process.
#pragma once

#include <ctime>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/jinja/ast.h"
#include "engine/jinja/interpreter.h"
#include "engine/jinja/value.h"

namespace switchyard::jinja {

struct RenderOptions {
  RenderLimits limits;
  std::time_t now = 0;  // strftime_now's clock; 0: the current time
};

class Template {
 public:
  static absl::StatusOr<Template> Parse(absl::string_view source);

  // Renders with `variables` as the top-level names.
  absl::StatusOr<std::string> Render(std::vector<std::pair<std::string, Value>> variables,
                                     const RenderOptions& options = {}) const;

 private:
  explicit Template(std::shared_ptr<const Body> body) : body_(std::move(body)) {}
  std::shared_ptr<const Body> body_;
};

// The message a render error carries: raise_exception's text stays as the template wrote it.
bool IsRaisedByTemplate(const absl::Status& status);

}  // namespace switchyard::jinja
