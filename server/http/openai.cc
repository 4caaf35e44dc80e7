#include "server/http/openai.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"

namespace switchyard::openai {
namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

constexpr int kMaxChoices = 64;
constexpr int kMaxStops = 16;

absl::Status Bad(absl::string_view param, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(param, ": ", what));
}

// Typed optional fields: absent or null leaves `out` unchanged.
absl::Status GetNumber(const json& body, const char* key, double lo, double hi, double* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return Bad(key, "must be a number");
  const double v = it->get<double>();
  if (!(v >= lo && v <= hi))
    return Bad(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v));
  *out = v;
  return absl::OkStatus();
}

absl::Status GetInt(const json& body, const char* key, int64_t lo, int64_t hi, int64_t* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer()) return Bad(key, "must be an integer");
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) return Bad(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v));
  *out = v;
  return absl::OkStatus();
}

absl::Status GetBool(const json& body, const char* key, bool* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return Bad(key, "must be true or false");
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status RefuseIfSet(const json& body, const char* key, absl::string_view why) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if ((it->is_object() || it->is_array() || it->is_string()) && it->empty()) {
    return absl::OkStatus();
  }
  return Bad(key, why);
}

// The text of a chat message's content: a string, or parts of type "text".
absl::StatusOr<std::string> MessageText(const json& content, size_t index) {
  const std::string param = absl::StrCat("messages[", index, "].content");
  if (content.is_null()) return std::string();
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) return Bad(param, "must be a string or an array of text parts");
  std::string text;
  for (const json& part : content) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
        !part["text"].is_string()) {
      return Bad(param, "only parts of type \"text\" are supported");
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

absl::Status CheckMessages(const json& body) {
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array() || it->empty()) {
    return Bad("messages", "must be a non-empty array");
  }
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return Bad(absl::StrCat("messages[", i, "].role"), "must be a string");
    }
    const std::string role = m["role"].get<std::string>();
    const json content = m.value("content", json());
    // Only an assistant turn may leave its content out (OpenAI's tool-call turns do).
    if (content.is_null() && role != "assistant") {
      return Bad(absl::StrCat("messages[", i, "].content"), "is required");
    }
    SY_RETURN_IF_ERROR(MessageText(content, i).status());
    if (auto calls = m.find("tool_calls"); calls != m.end() && !calls->is_null()) {
      if (!calls->is_array())
        return Bad(absl::StrCat("messages[", i, "].tool_calls"), "must be an array");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckTools(const json& body) {
  auto it = body.find("tools");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array()) return Bad("tools", "must be an array");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& t = (*it)[i];
    const std::string where = absl::StrCat("tools[", i, "]");
    if (!t.is_object() || t.value("type", "") != "function") {
      return Bad(where, "must be {\"type\": \"function\", \"function\": {...}}");
    }
    auto fn = t.find("function");
    if (fn == t.end() || !fn->is_object() || !fn->contains("name") || !(*fn)["name"].is_string()) {
      return Bad(absl::StrCat(where, ".function.name"), "must be a string");
    }
  }
  return absl::OkStatus();
}

// The conversation, tools and template variables of a chat request. `body` has been checked
// to be an object; `text` is parsed again keeping key order, which templates print in.
absl::StatusOr<ChatInput> ParseChat(absl::string_view text, const json& body) {
  SY_RETURN_IF_ERROR(CheckMessages(body));
  SY_RETURN_IF_ERROR(CheckTools(body));
  const nlohmann::ordered_json ordered = nlohmann::ordered_json::parse(text, nullptr, false);
  if (!ordered.is_object()) return Bad("body", "must be a JSON object");
  ChatInput chat;
  chat.messages = ordered["messages"];
  if (auto it = ordered.find("tools"); it != ordered.end() && !it->is_null()) chat.tools = *it;
  SY_RETURN_IF_ERROR(GetBool(body, "add_generation_prompt", &chat.add_generation_prompt));
  SY_RETURN_IF_ERROR(GetBool(body, "continue_final_message", &chat.continue_final_message));
  if (auto it = ordered.find("chat_template_kwargs"); it != ordered.end() && !it->is_null()) {
    if (!it->is_object()) return Bad("chat_template_kwargs", "must be an object");
    chat.template_kwargs = *it;
  }
  return chat;
}

// The JSON schema a "required" tool choice constrains the output to (as vLLM builds it): an array
// of {"name", "parameters"} calls of the given tools (one call without parallel_tool_calls).
ojson RequiredToolCallsSchema(const ojson& tools, bool parallel) {
  ojson any = ojson::array();
  for (const ojson& t : tools) {
    const ojson& fn = t["function"];
    ojson params = fn.value("parameters", ojson({{"type", "object"}}));
    any.push_back({{"type", "object"},
                   {"properties", {{"name", {{"const", fn["name"]}}}, {"parameters", params}}},
                   {"required", {"name", "parameters"}},
                   {"additionalProperties", false}});
  }
  ojson schema = {{"type", "array"}, {"minItems", 1}, {"items", {{"anyOf", any}}}};
  if (!parallel) schema["maxItems"] = 1;
  return schema;
}

// tools / tool_choice / parallel_tool_calls. Tools always render into the prompt. With
// tool_choice "auto" (the default with tools) calls are parsed from the output in the model's
// format; "required" and a named function constrain the output with a grammar (the calls'
// arguments always validate against the functions' parameters), as vLLM does.
absl::Status ParseToolChoice(Endpoint endpoint, absl::string_view text, const json& body,
                             const Frontend& frontend, ParsedRequest* req,
                             std::optional<OutputConstraint>* constraint) {
  auto tools = body.find("tools");
  const bool has_tools = tools != body.end() && !tools->is_null() && !tools->empty();
  auto choice = body.find("tool_choice");
  const bool has_choice = choice != body.end() && !choice->is_null();
  SY_RETURN_IF_ERROR(GetBool(body, "parallel_tool_calls", &req->parallel_tool_calls));
  if (!has_tools) {
    if (has_choice && *choice != json("none")) {
      return Bad("tool_choice", "is only allowed when tools are given");
    }
    return absl::OkStatus();
  }
  if (endpoint != Endpoint::kChat) return Bad("tools", "are for chat completions");
  SY_RETURN_IF_ERROR(CheckTools(body));
  const json mode = has_choice ? *choice : json("auto");
  if (mode == json("none")) return absl::OkStatus();
  if (mode == json("required") || mode.is_object()) {
    if (constraint->has_value()) {
      return Bad("tool_choice",
                 "\"required\" or a named function cannot be combined with "
                 "response_format or guided decoding");
    }
    const ojson ordered = ojson::parse(text, nullptr, false);
    const ojson& tool_list = ordered["tools"];
    OutputConstraint c;
    c.kind = OutputConstraint::Kind::kJsonSchema;
    if (mode == json("required")) {
      c.spec = RequiredToolCallsSchema(tool_list, req->parallel_tool_calls).dump();
      c.field = "tool_choice \"required\" (the tools' parameters)";
      req->tool_format = ToolCallFormat::kRequired;
    } else {
      const json* fn = mode.value("type", "") == "function" && mode.contains("function")
                           ? &mode["function"]
                           : nullptr;
      if (fn == nullptr || !fn->is_object() || !fn->contains("name") ||
          !(*fn)["name"].is_string()) {
        return Bad("tool_choice",
                   "a named choice is {\"type\": \"function\", \"function\": "
                   "{\"name\": ...}}");
      }
      const std::string name = (*fn)["name"].get<std::string>();
      const ojson* chosen = nullptr;
      for (const ojson& t : tool_list) {
        if (t["function"]["name"] == name) chosen = &t;
      }
      if (chosen == nullptr) {
        return Bad("tool_choice", absl::StrCat("names \"", name, "\", which is not in tools"));
      }
      c.spec = (*chosen)["function"].value("parameters", ojson({{"type", "object"}})).dump();
      c.field = absl::StrCat("tools: the parameters of \"", name, "\"");
      req->tool_format = ToolCallFormat::kNamed;
      req->tool_name = name;
    }
    *constraint = std::move(c);
    return absl::OkStatus();
  }
  if (mode != json("auto")) {
    return Bad("tool_choice", "must be \"none\", \"auto\", \"required\" or a function");
  }
  if (frontend.tool_call_format() == ToolCallFormat::kNone) {
    return Bad("tool_choice",
               "the model's chat template shows no tool-call format this server parses; start "
               "it with --tool-call-parser (hermes, llama3_json, mistral) or send "
               "tool_choice \"none\" or \"required\"");
  }
  req->tool_format = frontend.tool_call_format();
  return absl::OkStatus();
}

// Structured output: OpenAI's response_format, vLLM's guided_json / guided_regex /
// guided_choice / guided_grammar and its newer structured_outputs object. At most one.
absl::StatusOr<std::optional<OutputConstraint>> ParseConstraint(absl::string_view text,
                                                                const json& body) {
  std::vector<OutputConstraint> found;
  std::optional<ojson> ordered;  // schemas keep their key order: properties are written in it
  const auto ordered_at = [&](const std::vector<std::string>& path) {
    if (!ordered) ordered = ojson::parse(text, nullptr, false);
    const ojson* at = &*ordered;
    for (const std::string& key : path) at = &(*at)[key];
    return *at;
  };
  const auto add = [&](OutputConstraint::Kind kind, std::string spec, std::string field) {
    found.push_back({kind, std::move(spec), std::move(field)});
  };
  const auto schema = [&](const json& value, const std::vector<std::string>& path,
                          const std::string& field) -> absl::Status {
    if (value.is_string()) {  // vLLM takes the schema as JSON text too
      const ojson parsed = ojson::parse(value.get<std::string>(), nullptr, false);
      if (parsed.is_discarded()) return Bad(field, "is not valid JSON");
      add(OutputConstraint::Kind::kJsonSchema, parsed.dump(), field);
    } else if (value.is_object() || value.is_boolean()) {
      add(OutputConstraint::Kind::kJsonSchema, ordered_at(path).dump(), field);
    } else {
      return Bad(field, "must be a JSON schema");
    }
    return absl::OkStatus();
  };
  const auto string_field = [&](const json& value, OutputConstraint::Kind kind,
                                const std::string& field) -> absl::Status {
    if (!value.is_string()) return Bad(field, "must be a string");
    add(kind, value.get<std::string>(), field);
    return absl::OkStatus();
  };
  const auto choice_field = [&](const json& value, const std::string& field) -> absl::Status {
    if (!value.is_array() || value.empty())
      return Bad(field, "must be a non-empty array of strings");
    for (const json& v : value) {
      if (!v.is_string()) return Bad(field, "must be a non-empty array of strings");
    }
    add(OutputConstraint::Kind::kChoice, value.dump(), field);
    return absl::OkStatus();
  };

  if (auto it = body.find("response_format"); it != body.end() && !it->is_null()) {
    const std::string type = it->is_object() ? it->value("type", "") : "";
    if (type == "json_object") {
      add(OutputConstraint::Kind::kJsonObject, "", "response_format");
    } else if (type == "json_schema") {
      auto js = it->find("json_schema");
      if (js == it->end() || !js->is_object() || !js->contains("schema")) {
        return Bad("response_format.json_schema.schema", "is required");
      }
      SY_RETURN_IF_ERROR(schema((*js)["schema"], {"response_format", "json_schema", "schema"},
                                "response_format.json_schema.schema"));
    } else if (type != "text") {
      return Bad("response_format", "type must be \"text\", \"json_object\" or \"json_schema\"");
    }
  }
  const auto present = [&](const json& obj, const char* key) {
    auto it = obj.find(key);
    return it != obj.end() && !it->is_null();
  };
  if (present(body, "guided_json")) {
    SY_RETURN_IF_ERROR(schema(body["guided_json"], {"guided_json"}, "guided_json"));
  }
  if (present(body, "guided_regex")) {
    SY_RETURN_IF_ERROR(
        string_field(body["guided_regex"], OutputConstraint::Kind::kRegex, "guided_regex"));
  }
  if (present(body, "guided_choice")) {
    SY_RETURN_IF_ERROR(choice_field(body["guided_choice"], "guided_choice"));
  }
  if (present(body, "guided_grammar")) {
    SY_RETURN_IF_ERROR(
        string_field(body["guided_grammar"], OutputConstraint::Kind::kGrammar, "guided_grammar"));
  }
  if (present(body, "structured_outputs")) {
    const json& so = body["structured_outputs"];
    if (!so.is_object()) return Bad("structured_outputs", "must be an object");
    if (present(so, "json")) {
      SY_RETURN_IF_ERROR(
          schema(so["json"], {"structured_outputs", "json"}, "structured_outputs.json"));
    }
    if (present(so, "regex")) {
      SY_RETURN_IF_ERROR(
          string_field(so["regex"], OutputConstraint::Kind::kRegex, "structured_outputs.regex"));
    }
    if (present(so, "choice")) {
      SY_RETURN_IF_ERROR(choice_field(so["choice"], "structured_outputs.choice"));
    }
    if (present(so, "grammar")) {
      SY_RETURN_IF_ERROR(string_field(so["grammar"], OutputConstraint::Kind::kGrammar,
                                      "structured_outputs.grammar"));
    }
    if (present(so, "json_object")) {
      if (!so["json_object"].is_boolean())
        return Bad("structured_outputs.json_object", "must be a boolean");
      if (so["json_object"].get<bool>())
        add(OutputConstraint::Kind::kJsonObject, "", "structured_outputs.json_object");
    }
  }
  if (found.size() > 1) {
    return Bad(found[1].field, absl::StrCat("cannot be combined with ", found[0].field,
                                            ": give one output constraint"));
  }
  if (found.empty()) return std::nullopt;
  return std::move(found[0]);
}

// A choice that called a tool and then stopped reports "tool_calls", as OpenAI's do.
bool EndedByStop(FinishReason r) {
  return r == FinishReason::kStop || r == FinishReason::kStopString;
}

json ToolCallsJson(const std::vector<ToolCall>& calls, int first_index, bool with_index) {
  json out = json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    json call = {{"id", calls[i].id},
                 {"type", "function"},
                 {"function", {{"name", calls[i].name}, {"arguments", calls[i].arguments}}}};
    if (with_index) call["index"] = first_index + static_cast<int>(i);
    out.push_back(std::move(call));
  }
  return out;
}

// OpenAI's {"token id": bias} map.
absl::Status ParseLogitBias(const json& body, std::vector<std::pair<int32_t, float>>* out) {
  auto it = body.find("logit_bias");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return Bad("logit_bias", "must be an object of token ids to biases");
  for (const auto& [key, value] : it->items()) {
    int32_t id = -1;
    if (!absl::SimpleAtoi(key, &id) || id < 0) {
      return Bad("logit_bias", absl::StrCat("keys must be token ids, got \"", key, "\""));
    }
    if (!value.is_number()) return Bad("logit_bias", "values must be numbers");
    out->emplace_back(id, value.get<float>());
  }
  return absl::OkStatus();
}

// Completions prompts: a string, an array of strings, an array of token ids, or an array of
// arrays of token ids.
absl::StatusOr<std::vector<GenerateInput>> ParsePrompts(const json& body) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) return Bad("prompt", "is required");
  std::vector<GenerateInput> out;
  const auto ids = [](const json& arr) -> absl::StatusOr<std::vector<int32_t>> {
    std::vector<int32_t> v;
    for (const json& x : arr) {
      if (!x.is_number_integer()) return Bad("prompt", "token arrays must hold integers");
      const int64_t id = x.get<int64_t>();
      if (id < 0 || id > INT32_MAX) return Bad("prompt", absl::StrCat("token id ", id));
      v.push_back(static_cast<int32_t>(id));
    }
    return v;
  };
  if (it->is_string()) {
    out.emplace_back().text = it->get<std::string>();
  } else if (it->is_array() && !it->empty() && (*it)[0].is_number()) {
    SY_ASSIGN_OR_RETURN(out.emplace_back().token_ids, ids(*it));
  } else if (it->is_array() && !it->empty()) {
    for (const json& p : *it) {
      if (p.is_string()) {
        out.emplace_back().text = p.get<std::string>();
      } else if (p.is_array()) {
        SY_ASSIGN_OR_RETURN(out.emplace_back().token_ids, ids(p));
      } else {
        return Bad("prompt", "array elements must be strings or token arrays");
      }
    }
  } else {
    return Bad("prompt", "must be a string, an array of strings or an array of token ids");
  }
  if (out.size() > static_cast<size_t>(kMaxChoices)) {
    return Bad("prompt", absl::StrCat("at most ", kMaxChoices, " prompts"));
  }
  return out;
}

std::string TokenText(const Tokenizer& tokenizer, int32_t id) {
  const int32_t one[] = {id};
  return tokenizer.Decode(one, false);
}

json Bytes(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

// Log-probabilities of `tokens`, in the endpoint's format; `offset` is where their text starts.
json CompletionLogprobs(const std::vector<SampledToken>& lps, const Tokenizer& tokenizer,
                        int64_t offset) {
  json tokens = json::array(), values = json::array(), tops = json::array(),
       offsets = json::array();
  for (const SampledToken& t : lps) {
    const std::string text = TokenText(tokenizer, t.token);
    tokens.push_back(text);
    values.push_back(t.logprob);
    json top = json::object();
    // Tokens with the same text share a key: the likeliest (listed first) keeps it.
    for (const auto& [id, lp] : t.top_logprobs) top.emplace(TokenText(tokenizer, id), lp);
    tops.push_back(top);
    offsets.push_back(offset);
    offset += static_cast<int64_t>(text.size());
  }
  return {{"tokens", tokens},
          {"token_logprobs", values},
          {"top_logprobs", tops},
          {"text_offset", offsets}};
}

json ChatLogprobs(const std::vector<SampledToken>& lps, const Tokenizer& tokenizer) {
  json content = json::array();
  for (const SampledToken& t : lps) {
    const std::string text = TokenText(tokenizer, t.token);
    json top = json::array();
    for (const auto& [id, lp] : t.top_logprobs) {
      const std::string alt = TokenText(tokenizer, id);
      top.push_back({{"token", alt}, {"logprob", lp}, {"bytes", Bytes(alt)}});
    }
    content.push_back(
        {{"token", text}, {"logprob", t.logprob}, {"bytes", Bytes(text)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

json Usage(const std::vector<ChoiceState>& choices, int n) {
  int64_t prompt = 0, completion = 0, cached = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    completion += choices[i].usage.completion_tokens;
    if (i % static_cast<size_t>(n) == 0) {  // each prompt once, as OpenAI counts it
      prompt += choices[i].usage.prompt_tokens;
      cached += choices[i].usage.cached_prompt_tokens;
    }
  }
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

}  // namespace

absl::StatusOr<json> ParseObject(absl::string_view text) {
  json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return absl::InvalidArgumentError("the body is not valid JSON");
  if (!body.is_object()) return absl::InvalidArgumentError("the body must be a JSON object");
  return body;
}

// The model: the served base model, or a loaded adapter by name (as vLLM serves LoRAs). Sets
// `name` to what the client called it and returns the adapter ("" for the base model).
absl::StatusOr<std::string> ResolveModel(const json& body, const Frontend& frontend,
                                         std::string* name) {
  *name = frontend.served_model_name();
  auto it = body.find("model");
  if (it == body.end() || it->is_null()) return std::string();
  if (!it->is_string()) return Bad("model", "must be a string");
  *name = it->get<std::string>();
  if (*name == frontend.served_model_name()) return std::string();
  const std::vector<AdapterInfo> adapters = frontend.ListAdapters();
  if (std::none_of(adapters.begin(), adapters.end(),
                   [&](const AdapterInfo& a) { return a.name == *name; })) {
    return absl::NotFoundError(absl::StrCat("model: The model `", *name, "` does not exist."));
  }
  return *name;
}

// Switchyard's extension beside `model`: "adapters": [{"name": ..., "weight": 1.0}, ...], a
// mixture of adapters (or one adapter with a scale); `model` then names the base model.
absl::Status ParseMixture(const json& body, const std::string& adapter,
                          std::vector<MixtureInput>* out) {
  auto it = body.find("adapters");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array()) return Bad("adapters", "must be an array of {\"name\", \"weight\"}");
  if (!adapter.empty()) {
    return Bad("adapters", "with adapters, model names the base model, not an adapter");
  }
  if (it->empty()) return Bad("adapters", "empty");
  if (it->size() > kMaxMixtureMembers) {
    return Bad("adapters", absl::StrCat("at most ", kMaxMixtureMembers, " members"));
  }
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string field = absl::StrCat("adapters[", i, "]");
    if (!m.is_object()) return Bad(field, "must be an object {\"name\", \"weight\"}");
    MixtureInput member;
    for (const auto& [key, value] : m.items()) {
      if (key == "name" && value.is_string()) {
        member.name = value.get<std::string>();
      } else if (key == "weight" && value.is_number()) {
        const double w = value.get<double>();
        if (!(std::abs(w) <= kMaxMixtureWeight)) {
          return Bad(field + ".weight", absl::StrCat("must lie in [-", kMaxMixtureWeight, ", ",
                                                     kMaxMixtureWeight, "]"));
        }
        member.weight = static_cast<float>(w);
      } else if (key == "name" || key == "weight") {
        return Bad(field + "." + key, key == "name" ? "must be a string" : "must be a number");
      } else {
        return Bad(field, absl::StrCat("unknown field \"", key, "\""));
      }
    }
    if (member.name.empty()) return Bad(field + ".name", "required");
    out->push_back(std::move(member));
  }
  return absl::OkStatus();
}

absl::StatusOr<ParsedRequest> ParseRequest(Endpoint endpoint, absl::string_view text,
                                           const Frontend& frontend) {
  SY_ASSIGN_OR_RETURN(const json body, ParseObject(text));
  ParsedRequest req;
  req.endpoint = endpoint;
  SY_ASSIGN_OR_RETURN(const std::string adapter, ResolveModel(body, frontend, &req.model));
  std::vector<MixtureInput> mixture;
  SY_RETURN_IF_ERROR(ParseMixture(body, adapter, &mixture));

  GenerationRequest base;
  double temperature = 1, top_p = 1, min_p = 0, presence = 0, frequency = 0, repetition = 1;
  SY_RETURN_IF_ERROR(GetNumber(body, "temperature", 0, 2, &temperature));
  SY_RETURN_IF_ERROR(GetNumber(body, "top_p", 0, 1, &top_p));
  SY_RETURN_IF_ERROR(GetNumber(body, "min_p", 0, 1, &min_p));
  SY_RETURN_IF_ERROR(GetNumber(body, "presence_penalty", -2, 2, &presence));
  SY_RETURN_IF_ERROR(GetNumber(body, "frequency_penalty", -2, 2, &frequency));
  SY_RETURN_IF_ERROR(GetNumber(body, "repetition_penalty", 1e-3, 100, &repetition));
  int64_t top_k = 0, n = 1, max_tokens = -1;
  SY_RETURN_IF_ERROR(GetInt(body, "top_k", -1, INT32_MAX, &top_k));
  SY_RETURN_IF_ERROR(GetInt(body, "n", 1, kMaxChoices, &n));
  SY_RETURN_IF_ERROR(GetInt(body, "max_tokens", 1, INT32_MAX, &max_tokens));
  SY_RETURN_IF_ERROR(GetInt(body, "max_completion_tokens", 1, INT32_MAX, &max_tokens));
  base.sampling.temperature = static_cast<float>(temperature);
  base.sampling.top_p = static_cast<float>(top_p);
  base.sampling.min_p = static_cast<float>(min_p);
  base.sampling.presence_penalty = static_cast<float>(presence);
  base.sampling.frequency_penalty = static_cast<float>(frequency);
  base.sampling.repetition_penalty = static_cast<float>(repetition);
  base.sampling.top_k = static_cast<int32_t>(top_k);
  base.max_tokens = max_tokens;
  req.n = static_cast<int>(n);
  if (auto it = body.find("seed"); it != body.end() && !it->is_null()) {
    if (!it->is_number_integer()) return Bad("seed", "must be an integer");
    base.sampling.seed = static_cast<uint64_t>(it->get<int64_t>());
  }
  if (auto it = body.find("stop"); it != body.end() && !it->is_null()) {
    if (it->is_string()) {
      base.stop_strings.push_back(it->get<std::string>());
    } else if (it->is_array() && it->size() <= kMaxStops) {
      for (const json& s : *it) {
        if (!s.is_string()) return Bad("stop", "must be a string or an array of strings");
        base.stop_strings.push_back(s.get<std::string>());
      }
    } else {
      return Bad("stop",
                 absl::StrCat("must be a string or an array of at most ", kMaxStops, " strings"));
    }
  }
  if (auto it = body.find("stop_token_ids"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) return Bad("stop_token_ids", "must be an array of integers");
    for (const json& s : *it) {
      if (!s.is_number_integer()) return Bad("stop_token_ids", "must be an array of integers");
      base.stop_token_ids.push_back(s.get<int32_t>());
    }
  }
  SY_RETURN_IF_ERROR(GetBool(body, "ignore_eos", &base.ignore_eos));
  SY_RETURN_IF_ERROR(GetBool(body, "skip_special_tokens", &base.skip_special_tokens));
  SY_RETURN_IF_ERROR(GetBool(body, "include_stop_str_in_output", &base.include_stop_string));
  SY_RETURN_IF_ERROR(GetBool(body, "stream", &req.stream));
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return Bad("stream_options", "must be an object");
    SY_RETURN_IF_ERROR(GetBool(*it, "include_usage", &req.include_usage));
  }
  SY_RETURN_IF_ERROR(ParseLogitBias(body, &base.sampling.logit_bias));
  SY_RETURN_IF_ERROR(RefuseIfSet(body, "functions", "is deprecated by OpenAI; send tools"));
  SY_RETURN_IF_ERROR(RefuseIfSet(body, "suffix", "is not supported"));
  SY_ASSIGN_OR_RETURN(std::optional<OutputConstraint> constraint, ParseConstraint(text, body));
  SY_RETURN_IF_ERROR(ParseToolChoice(endpoint, text, body, frontend, &req, &constraint));
  if (req.tool_format == ToolCallFormat::kMistral) {
    base.skip_special_tokens = false;  // [TOOL_CALLS] is a control token
  }
  if (auto it = body.find("best_of"); it != body.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() != n) {
      return Bad("best_of", "is not supported (other than equal to n)");
    }
  }

  std::vector<GenerateInput> prompts;
  if (endpoint == Endpoint::kCompletions) {
    SY_ASSIGN_OR_RETURN(prompts, ParsePrompts(body));
    SY_RETURN_IF_ERROR(GetBool(body, "echo", &req.echo));
    if (auto it = body.find("logprobs"); it != body.end() && !it->is_null()) {
      int64_t lp = 0;
      SY_RETURN_IF_ERROR(GetInt(body, "logprobs", 0, Sampler::kMaxLogprobs, &lp));
      req.logprobs = static_cast<int>(lp);
    }
  } else {
    SY_ASSIGN_OR_RETURN(ChatInput chat, ParseChat(text, body));
    prompts.emplace_back().chat = std::move(chat);
    bool logprobs = false;
    SY_RETURN_IF_ERROR(GetBool(body, "logprobs", &logprobs));
    int64_t top = 0;
    SY_RETURN_IF_ERROR(GetInt(body, "top_logprobs", 0, Sampler::kMaxLogprobs, &top));
    if (top > 0 && !logprobs) return Bad("top_logprobs", "needs logprobs: true");
    req.logprobs = logprobs ? static_cast<int>(top) : -1;
  }
  base.sampling.logprobs = req.logprobs;
  if (static_cast<int64_t>(prompts.size()) * n > kMaxChoices) {
    return Bad("n", absl::StrCat("prompts x n must be at most ", kMaxChoices));
  }
  for (GenerateInput& p : prompts) {
    for (int j = 0; j < req.n; ++j) {
      GenerateInput in = p;
      in.adapter = adapter;
      in.mixture = mixture;
      in.constraint = constraint;
      in.echo = req.echo;
      in.request = base;
      // Several choices of one seeded prompt must still differ.
      if (base.sampling.seed.has_value()) in.request.sampling.seed = *base.sampling.seed + j;
      req.choices.push_back(std::move(in));
    }
  }
  return req;
}

absl::StatusOr<json> Tokenize(absl::string_view text, const Frontend& frontend) {
  SY_ASSIGN_OR_RETURN(const json body, ParseObject(text));
  std::string model;
  SY_RETURN_IF_ERROR(ResolveModel(body, frontend, &model).status());
  const bool chat = body.contains("messages");
  std::string prompt;
  if (chat) {
    SY_ASSIGN_OR_RETURN(ChatInput input, ParseChat(text, body));
    SY_ASSIGN_OR_RETURN(prompt, frontend.RenderChat(input));
  } else {
    auto it = body.find("prompt");
    if (it == body.end() || !it->is_string()) return Bad("prompt", "a string is required");
    prompt = it->get<std::string>();
  }
  bool add_special = !chat;  // a chat template writes its own special tokens
  SY_RETURN_IF_ERROR(GetBool(body, "add_special_tokens", &add_special));
  absl::StatusOr<std::vector<int32_t>> ids = frontend.Tokenize(prompt, add_special);
  if (!ids.ok()) return Bad("prompt", ids.status().message());
  return json{
      {"count", ids->size()}, {"max_model_len", frontend.Info().max_model_len}, {"tokens", *ids}};
}

absl::StatusOr<json> Detokenize(absl::string_view text, const Frontend& frontend) {
  SY_ASSIGN_OR_RETURN(const json body, ParseObject(text));
  std::string model;
  SY_RETURN_IF_ERROR(ResolveModel(body, frontend, &model).status());
  auto it = body.find("tokens");
  if (it == body.end() || !it->is_array())
    return Bad("tokens", "an array of token ids is required");
  std::vector<int32_t> ids;
  for (const json& t : *it) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX) {
      return Bad("tokens", "must hold token ids");
    }
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  absl::StatusOr<std::string> prompt = frontend.Detokenize(ids, false);
  if (!prompt.ok()) return Bad("tokens", prompt.status().message());
  return json{{"prompt", *prompt}};
}

json FinishReasonJson(FinishReason r) {
  const char* s = FinishReasonString(r);
  return s == nullptr ? json() : json(s);
}

const char* FinishReasonString(FinishReason r) {
  switch (r) {
    case FinishReason::kStop:
    case FinishReason::kStopString:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kNone:
      return nullptr;
    default:
      return "abort";
  }
}

json BuildResponse(const ParsedRequest& req, const std::string& id, int64_t created,
                   const std::vector<ChoiceState>& choices, const Tokenizer& tokenizer) {
  json out_choices = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceState& c = choices[i];
    json choice = {{"index", i}, {"finish_reason", FinishReasonJson(c.finish)}};
    if (req.endpoint == Endpoint::kCompletions) {
      choice["text"] = c.prompt_text + c.text;
      choice["logprobs"] = req.logprobs >= 0
                               ? CompletionLogprobs(c.logprobs, tokenizer, c.prompt_text.size())
                               : json();
    } else if (req.tool_format != ToolCallFormat::kNone) {
      ParsedToolOutput parsed = ParseToolCalls(req.tool_format, c.text, req.tool_name);
      if (!req.parallel_tool_calls && parsed.calls.size() > 1) parsed.calls.resize(1);
      choice["message"] = {{"role", "assistant"},
                           {"content", parsed.content ? json(*parsed.content) : json()}};
      if (!parsed.calls.empty()) {
        choice["message"]["tool_calls"] = ToolCallsJson(parsed.calls, 0, false);
        if (EndedByStop(c.finish) && ModelChoseToolCalls(req.tool_format)) {
          choice["finish_reason"] = "tool_calls";
        }
      }
      choice["logprobs"] = req.logprobs >= 0 ? ChatLogprobs(c.logprobs, tokenizer) : json();
    } else {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
      choice["logprobs"] = req.logprobs >= 0 ? ChatLogprobs(c.logprobs, tokenizer) : json();
    }
    out_choices.push_back(std::move(choice));
  }
  const bool chat = req.endpoint == Endpoint::kChat;
  return {{"id", id},
          {"object", chat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", req.model},
          {"choices", out_choices},
          {"usage", Usage(choices, req.n)}};
}

json BuildChunk(const ParsedRequest& req, const std::string& id, int64_t created, int index,
                const RequestEvent& event, bool first, const std::string& echo_text,
                int64_t text_offset, const Tokenizer& tokenizer, const std::vector<ToolCall>& calls,
                int first_call_index, bool called) {
  const bool chat = req.endpoint == Endpoint::kChat;
  json choice = {{"index", index}, {"finish_reason", FinishReasonJson(event.finish)}};
  if (called && EndedByStop(event.finish) && ModelChoseToolCalls(req.tool_format)) {
    choice["finish_reason"] = "tool_calls";
  }
  if (chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!event.text.empty() || first) delta["content"] = event.text;
    if (!calls.empty()) delta["tool_calls"] = ToolCallsJson(calls, first_call_index, true);
    choice["delta"] = delta;
    choice["logprobs"] = req.logprobs >= 0 ? ChatLogprobs(event.logprobs, tokenizer) : json();
  } else {
    choice["text"] = (first ? echo_text : std::string()) + event.text;
    choice["logprobs"] =
        req.logprobs >= 0
            ? CompletionLogprobs(event.logprobs, tokenizer,
                                 text_offset + static_cast<int64_t>(first ? echo_text.size() : 0))
            : json();
  }
  return {{"id", id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", req.model},
          {"choices", json::array({choice})}};
}

json BuildUsageChunk(const ParsedRequest& req, const std::string& id, int64_t created,
                     const std::vector<ChoiceState>& choices) {
  const bool chat = req.endpoint == Endpoint::kChat;
  return {{"id", id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", req.model},
          {"choices", json::array()},
          {"usage", Usage(choices, req.n)}};
}

json BuildModelList(const Frontend& frontend, int64_t created) {
  const ServerInfo info = frontend.Info();
  json data = json::array();
  data.push_back({{"id", info.model},
                  {"object", "model"},
                  {"created", created},
                  {"owned_by", "switchyard"},
                  {"root", info.model_path},
                  {"parent", nullptr},
                  {"max_model_len", info.max_model_len}});
  for (const AdapterInfo& a : frontend.ListAdapters()) {
    data.push_back({{"id", a.name},
                    {"object", "model"},
                    {"created", created},
                    {"owned_by", "switchyard"},
                    {"root", a.path},
                    {"parent", info.model},
                    {"max_model_len", info.max_model_len}});
  }
  return {{"object", "list"}, {"data", data}};
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

int HttpStatus(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kFailedPrecondition:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

json ErrorBody(const absl::Status& s, int http_status) {
  // Our messages start with the parameter they are about ("max_tokens: ...").
  const std::string message(s.message());
  json param = nullptr;
  const size_t colon = message.find(':');
  if (colon != std::string::npos && colon > 0) {
    const std::string head = message.substr(0, colon);
    if (std::all_of(head.begin(), head.end(), [](char c) {
          return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' ||
                 c == '[' || c == ']';
        })) {
      param = head;
    }
  }
  const int status = http_status != 0 ? http_status : HttpStatus(s);
  const char* type = status == 404   ? "NotFoundError"
                     : status == 413 ? "RequestTooLargeError"
                     : status == 401 ? "AuthenticationError"
                     : status == 403 ? "PermissionDeniedError"
                     : status == 429 ? "RateLimitError"
                     : status >= 500 ? "InternalServerError"
                                     : "BadRequestError";
  json code = status;
  if (status == 404 && param == "model") code = "model_not_found";
  return {{"error", {{"message", message}, {"type", type}, {"param", param}, {"code", code}}}};
}

}  // namespace switchyard::openai
