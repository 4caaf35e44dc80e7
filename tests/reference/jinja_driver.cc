// Renders template cases with our Jinja engine for tests/reference/test_chat_templates.py.
//   jinja_driver CASES.json  ->  stdout: [{"ok": true, "text": ...} | {"ok": false, ...}, ...]
// CASES.json: {"now": EPOCH_SECONDS, "cases": [{"template": TEXT, "context": {...}}, ...]}; the
// context's key order is kept (templates print dicts in insertion order).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "engine/jinja/template.h"
#include "nlohmann/json.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: jinja_driver CASES.json\n");
    return 2;
  }
  std::ifstream in(argv[1]);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const nlohmann::ordered_json job = nlohmann::ordered_json::parse(buffer.str());
  switchyard::jinja::RenderOptions options;
  options.now = job.value("now", static_cast<int64_t>(0));
  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  for (const auto& c : job["cases"]) {
    nlohmann::ordered_json r;
    auto t = switchyard::jinja::Template::Parse(c["template"].get<std::string>());
    if (!t.ok()) {
      r = {{"ok", false}, {"stage", "parse"}, {"error", std::string(t.status().message())}};
      results.push_back(r);
      continue;
    }
    std::vector<std::pair<std::string, switchyard::jinja::Value>> vars;
    for (const auto& [k, v] : c["context"].items()) {
      vars.emplace_back(k, *switchyard::jinja::FromJson(v));
    }
    auto out = t->Render(std::move(vars), options);
    if (out.ok()) {
      r = {{"ok", true}, {"text", *out}};
    } else {
      r = {{"ok", false},
           {"stage", "render"},
           {"raised", switchyard::jinja::IsRaisedByTemplate(out.status())},
           {"error", std::string(out.status().message())}};
    }
    results.push_back(r);
  }
  std::cout << results.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  return 0;
}
