// Our tokenizer over a job file (the format of tests/js/tokenizer_reference.mjs), printing the
// same JSON (a tokenizer's "dir" may be a .gguf file), plus checks of our own invariants: invalid
// UTF-8 is refused, and a decode stream's deltas, concatenated, equal the full decode.
//
//   tokenizer_driver JOB.json > OUT.json

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "engine/core/json_util.h"
#include "engine/engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"

namespace switchyard {
namespace {

int Fail(const std::string& what) {
  std::fprintf(stderr, "tokenizer_driver: %s\n", what.c_str());
  return 1;
}

// Decodes through a stream token by token; records the first mismatch against Decode.
std::string StreamCheck(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip,
                        nlohmann::json* problems) {
  std::string streamed;
  DecodeStream s = tok.NewDecodeStream(skip);
  for (int32_t id : ids) {
    std::string delta;
    s.Push(id, &delta);
    if (utf8::FirstInvalid(delta) != absl::string_view::npos) {
      problems->push_back("a stream delta is not valid UTF-8");
    }
    streamed += delta;
  }
  s.Finish(&streamed);
  const std::string full = tok.Decode(ids, skip);
  if (streamed != full) {
    problems->push_back(nlohmann::json{{"stream", streamed}, {"decode", full}, {"ids", ids}});
  }
  return full;
}

int Main(int argc, char** argv) {
  if (argc != 2) return Fail("usage: tokenizer_driver JOB.json");
  auto text = ReadFile(argv[1]);
  if (!text.ok()) return Fail(text.status().ToString());
  auto job = json_util::Parse(*text, "job");
  if (!job.ok()) return Fail(job.status().ToString());
  nlohmann::json result = nlohmann::json::object();
  for (const auto& t : (*job)["tokenizers"]) {
    const std::string name = t["name"].get<std::string>();
    auto tok_or = LoadModelTokenizer(t["dir"].get<std::string>());  // a folder or a .gguf
    if (!tok_or.ok()) return Fail(name + ": " + tok_or.status().ToString());
    const Tokenizer& tok = **tok_or;
    nlohmann::json problems = nlohmann::json::array();
    nlohmann::json texts = nlohmann::json::array();
    for (const auto& jt : (*job)["texts"]) {
      const std::string s = jt.get<std::string>();
      auto ids = tok.Encode(s, {.add_special_tokens = true});
      auto plain = tok.Encode(s, {.add_special_tokens = false});
      if (!ids.ok() || !plain.ok()) return Fail(name + ": encode failed on valid text");
      texts.push_back({{"ids", *ids},
                       {"plain", *plain},
                       {"decoded", StreamCheck(tok, *ids, false, &problems)},
                       {"decoded_skip", StreamCheck(tok, *ids, true, &problems)}});
    }
    nlohmann::json invalid = nlohmann::json::array();
    for (const auto& hex : (*job)["invalid_hex"]) {
      const std::string bytes = absl::HexStringToBytes(hex.get<std::string>());
      if (tok.Encode(bytes).ok())
        problems.push_back("invalid UTF-8 was accepted: " + hex.get<std::string>());
      auto ids = tok.Encode(utf8::Sanitize(bytes), {.add_special_tokens = false});
      invalid.push_back({{"ids", ids.ok() ? nlohmann::json(*ids) : nlohmann::json()}});
    }
    nlohmann::json decodes = nlohmann::json::array();
    if ((*job)["decode_ids"].contains(name)) {
      for (const auto& ids : (*job)["decode_ids"][name]) {
        decodes.push_back(StreamCheck(tok, ids.get<std::vector<int32_t>>(), false, &problems));
      }
    }
    result[name] = {{"texts", texts},
                    {"invalid", invalid},
                    {"decodes", decodes},
                    {"problems", problems},
                    {"bos", tok.bos_token()},
                    {"eos", tok.eos_token()},
                    {"chat_template", tok.chat_template()}};
  }
  std::printf("%s", result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  return 0;
}

}  // namespace
}  // namespace switchyard

int main(int argc, char** argv) { return switchyard::Main(argc, argv); }
