// Fuzzes the OpenAI request parser (server/http/openai.cc) with arbitrary bodies on both
// endpoints (and /tokenize, /detokenize), against a frontend over the model in
// SWITCHYARD_FUZZ_TOKENIZER. Properties, beyond not crashing: a body is either parsed or refused as
// INVALID_ARGUMENT (400) or NOT_FOUND (an unknown model, 404), never anything else, and so is
// preparing its first choice (tokenizing, compiling its output constraint); a refusal's error
// object serialises; a parsed request's choices and responses serialise, whatever text the
// request carried. The body as a query string of the adapter endpoints' GET requests: the
// threshold read from it is refused as INVALID_ARGUMENT or answered (NOT_FOUND: no such adapter).
#include <cstdint>
#include <string>

#include "absl/strings/numbers.h"
#include "server/frontend/frontend.h"
#include "server/http/adapter_json.h"
#include "server/http/openai.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using namespace switchyard;
using fuzz::Check;
fuzz::FrontendWorld* g_world = nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_world = fuzz::FrontendWorld::Create();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  const Frontend& f = *g_world->frontend;
  for (openai::Endpoint endpoint : {openai::Endpoint::kCompletions, openai::Endpoint::kChat}) {
    absl::StatusOr<openai::ParsedRequest> req = openai::ParseRequest(endpoint, body, f);
    if (!req.ok()) {
      const absl::StatusCode code = req.status().code();
      Check(code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound,
            "a refusal is INVALID_ARGUMENT or NOT_FOUND");
      const int http = openai::HttpStatus(req.status());
      Check(http == 400 || http == 404, "a refusal is a 400 or a 404");
      Check(!openai::Dump(openai::ErrorBody(req.status())).empty(), "the error serialises");
      continue;
    }
    Check(!req->choices.empty() && req->n >= 1, "a parsed request has choices");
    // Preparing it tokenizes the prompt and compiles any output constraint.
    absl::StatusOr<PreparedRequest> prepared = f.Prepare(req->choices.front());
    Check(prepared.ok() || prepared.status().code() == absl::StatusCode::kInvalidArgument ||
              prepared.status().code() == absl::StatusCode::kNotFound,
          "preparing answers or refuses with a client error");
    Check(static_cast<int>(req->choices.size()) % req->n == 0, "prompts x n choices");
    // Responses over arbitrary text the request carried (its stop strings, say) serialise.
    std::vector<openai::ChoiceState> choices(req->choices.size());
    for (size_t i = 0; i < choices.size(); ++i) {
      const auto& stops = req->choices[i].request.stop_strings;
      choices[i].text = stops.empty() ? body : stops.front();
      choices[i].finish = FinishReason::kLength;
    }
    Check(!openai::Dump(openai::BuildResponse(*req, "id", 0, choices, f.tokenizer())).empty(),
          "the response serialises");
    Check(!openai::Dump(openai::BuildUsageChunk(*req, "id", 0, choices)).empty(),
          "the usage chunk serialises");
  }
  for (const char* key : {"similarity_threshold", "version"}) {
    const std::optional<std::string> value = QueryParameter("/v1/adapters/a/experts?" + body, key);
    double threshold = 0;
    if (!value.has_value() || !absl::SimpleAtod(*value, &threshold)) continue;
    const absl::StatusCode code = f.ExpertDiagnostics("a", threshold).status().code();
    Check(code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound,
          "a threshold is refused or the adapter looked up");
  }
  for (auto* fn : {&openai::Tokenize, &openai::Detokenize}) {
    absl::StatusOr<nlohmann::json> out = fn(body, f);
    const absl::StatusCode code = out.status().code();
    Check(out.ok() || code == absl::StatusCode::kInvalidArgument ||
              code == absl::StatusCode::kNotFound,
          "/tokenize and /detokenize answer or refuse with a client error");
    if (out.ok()) Check(!openai::Dump(*out).empty(), "their answer serialises");
  }
  return 0;
}
