// Chat-template rendering speed on one core: the time to render a prompt (median and p99 over
// repeated renders) for real templates from the parity corpus, over conversations of 2, 20 and
// 200 turns with two tools, and the time to compile each template. Rendering runs on the request
// path of every chat request, before the prompt is tokenized.
//
//   bench_chat_template [--templates "meta-llama/Llama-3.1-8B-Instruct,Qwen/Qwen3-0.6B"]

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "bench/stats.h"
#include "engine/core/json_util.h"
#include "engine/tokenizer/chat_template.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, corpus, "tests/reference/chat_templates/huggingface_jinja_e2e.json",
          "the parity suite's template corpus");
ABSL_FLAG(std::string, templates,
          "meta-llama/Llama-3.1-8B-Instruct,Qwen/Qwen2.5-7B-Instruct,Qwen/Qwen3-0.6B,"
          "mistralai/Mistral-7B-Instruct-v0.3 (JSON Schema),deepseek-ai/DeepSeek-R1,"
          "HuggingFaceTB/SmolLM3-3B",
          "comma-separated corpus entries to measure");
ABSL_FLAG(int, renders, 200, "renders per measurement");

namespace switchyard {
namespace {

using Clock = std::chrono::steady_clock;
using ojson = nlohmann::ordered_json;

double Micros(Clock::time_point a) {
  return std::chrono::duration<double, std::micro>(Clock::now() - a).count();
}

ojson Tools() {
  return ojson::parse(R"([
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "search", "description": "Search the web",
      "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
        "required": ["q"]}}}])");
}

// A system prompt, then `turns` alternating user/assistant messages ending with a user turn.
ojson Conversation(int turns) {
  ojson messages = ojson::array();
  messages.push_back({{"role", "system"}, {"content", "You are a helpful assistant."}});
  for (int i = 0; i < turns; ++i) {
    const bool user = i % 2 == 0 || i == turns - 1;
    messages.push_back(
        {{"role", user ? "user" : "assistant"},
         {"content", "Message " + std::to_string(i) +
                         ": the quick brown fox jumps over the lazy dog, twice over."}});
  }
  return messages;
}

int Main() {
  auto corpus_text = ReadFile(absl::GetFlag(FLAGS_corpus));
  if (!corpus_text.ok()) {
    std::fprintf(stderr, "%s\n", corpus_text.status().ToString().c_str());
    return 1;
  }
  const nlohmann::json corpus = nlohmann::json::parse(*corpus_text);
  const int renders = absl::GetFlag(FLAGS_renders);
  std::printf("%-48s %8s %6s %9s %10s %10s\n", "template", "compile", "turns", "prompt B",
              "median us", "p99 us");
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_templates), ',')) {
    if (!corpus.contains(std::string(name))) {
      std::fprintf(stderr, "no template \"%s\" in the corpus\n", std::string(name).c_str());
      return 1;
    }
    const std::string source = corpus[std::string(name)]["template"].get<std::string>();
    const Clock::time_point c0 = Clock::now();
    absl::StatusOr<ChatTemplate> t = ChatTemplate::Compile(source, "<s>", "</s>");
    const double compile_us = Micros(c0);
    if (!t.ok()) {
      std::fprintf(stderr, "%s\n", t.status().ToString().c_str());
      return 1;
    }
    for (int turns : {2, 20, 200}) {
      ChatInput in;
      in.messages = Conversation(turns);
      in.tools = Tools();
      std::vector<double> samples;
      size_t bytes = 0;
      bool failed = false;
      for (int i = 0; i < renders && !failed; ++i) {
        const Clock::time_point r0 = Clock::now();
        absl::StatusOr<std::string> out = t->Render(in);
        samples.push_back(Micros(r0));
        if (!out.ok()) {
          // Some templates refuse a shape (e.g. Mistral's alternation with a system turn).
          std::printf("%-48.48s %8.0f %6d  refused: %.60s\n", std::string(name).c_str(), compile_us,
                      turns, std::string(out.status().message()).c_str());
          failed = true;
        } else {
          bytes = out->size();
        }
      }
      if (failed) continue;
      std::printf("%-48.48s %8.0f %6d %9zu %10.1f %10.1f\n", std::string(name).c_str(), compile_us,
                  turns, bytes, bench::Median(samples), bench::Percentile(samples, 0.99));
    }
  }
  return 0;
}

}  // namespace
}  // namespace switchyard

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return switchyard::Main();
}
