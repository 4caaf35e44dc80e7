// Local generation without a server: loads a model and its tokenizer, prefills a prompt (text,
// optionally wrapped in the model's chat template, or token ids) and samples a continuation,
// streaming the text as it comes, then the decode speed.
//
//   switchyard-generate --model build/demo/model --prompt "Once upon a time" --max_tokens 32
//   switchyard-generate --model build/demo/model --chat --prompt "Hello!"

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/engine.h"
#include "engine/kv/block_pool.h"
#include "engine/sampling/sampler.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/tokenizer.h"

ABSL_FLAG(std::string, model, "", "model folder or .gguf file");
ABSL_FLAG(std::string, quantization, "none", "none, int8 or int4 (quantize at load)");
ABSL_FLAG(std::string, prompt, "", "prompt text");
ABSL_FLAG(bool, chat, false, "render the prompt as a user message with the model's chat template");
ABSL_FLAG(std::string, prompt_ids, "", "comma-separated prompt token ids, instead of --prompt");
ABSL_FLAG(int, max_tokens, 32, "tokens to generate");
ABSL_FLAG(double, temperature, 0.8, "sampling temperature (0: greedy)");
ABSL_FLAG(double, top_p, 0.95, "nucleus sampling threshold");
ABSL_FLAG(int64_t, seed, 0, "sampling seed");

namespace switchyard {
namespace {

int Main() {
  EngineOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  auto quantization = ParseQuantization(absl::GetFlag(FLAGS_quantization));
  if (!quantization.ok()) {
    std::fprintf(stderr, "switchyard-generate: %s\n", quantization.status().ToString().c_str());
    return 1;
  }
  options.quantization = *quantization;
  options.kv_cache_bytes = int64_t{256} << 20;
  auto engine_or = Engine::Create(options);
  if (!engine_or.ok()) {
    std::fprintf(stderr, "switchyard-generate: %s\n", engine_or.status().ToString().c_str());
    return 1;
  }
  Engine& engine = **engine_or;
  std::fprintf(stderr, "%s\n", engine.Describe().c_str());

  auto tokenizer = LoadModelTokenizer(options.model_dir);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "switchyard-generate: %s\n", tokenizer.status().ToString().c_str());
    return 1;
  }
  std::vector<int32_t> prompt;
  std::string text = absl::GetFlag(FLAGS_prompt);
  if (absl::GetFlag(FLAGS_chat)) {
    auto tmpl = ChatTemplate::Compile((*tokenizer)->chat_template(), (*tokenizer)->bos_token(),
                                      (*tokenizer)->eos_token());
    const std::vector<ChatMessage> messages = {{"user", text}};
    absl::StatusOr<std::string> rendered =
        tmpl.ok() ? tmpl->Render(ChatInput::FromMessages(messages)) : tmpl.status();
    if (!rendered.ok()) {
      std::fprintf(stderr, "switchyard-generate: %s\n", rendered.status().ToString().c_str());
      return 1;
    }
    text = std::move(*rendered);
  }
  if (!text.empty()) {
    // A chat template writes its own special tokens.
    auto ids = (*tokenizer)->Encode(text, {.add_special_tokens = !absl::GetFlag(FLAGS_chat)});
    if (!ids.ok()) {
      std::fprintf(stderr, "switchyard-generate: %s\n", ids.status().ToString().c_str());
      return 1;
    }
    prompt = std::move(*ids);
  }
  for (absl::string_view part :
       absl::StrSplit(absl::GetFlag(FLAGS_prompt_ids), ',', absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      std::fprintf(stderr, "switchyard-generate: bad token id \"%s\"\n", std::string(part).c_str());
      return 1;
    }
    prompt.push_back(id);
  }
  if (prompt.empty())
    prompt.push_back(static_cast<int32_t>(std::max<int64_t>(0, engine.config().bos_token_id)));

  SamplingParams params;
  params.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  params.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  params.seed = static_cast<uint64_t>(absl::GetFlag(FLAGS_seed));
  if (absl::Status s = params.Validate(); !s.ok()) {
    std::fprintf(stderr, "switchyard-generate: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  Sampler sampler(params, prompt, 0);
  const int max_tokens = absl::GetFlag(FLAGS_max_tokens);
  BlockPool pool(engine.num_kv_blocks());
  std::vector<int32_t> blocks;
  const int64_t total = static_cast<int64_t>(prompt.size()) + max_tokens;
  if (!pool.Allocate(static_cast<int>((total + engine.block_size() - 1) / engine.block_size()),
                     &blocks)) {
    std::fprintf(stderr, "switchyard-generate: prompt too long for the KV cache\n");
    return 1;
  }
  StepBatch batch{prompt, {{0, static_cast<int64_t>(prompt.size()), blocks, true}}};
  int64_t position = 0;
  DecodeStream stream = (*tokenizer)->NewDecodeStream(/*skip_special_tokens=*/true);
  std::printf("%s", text.c_str());
  int generated = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < max_tokens; ++i) {
    auto out = engine.Step(batch);
    if (!out.ok()) {
      std::fprintf(stderr, "switchyard-generate: %s\n", out.status().ToString().c_str());
      return 1;
    }
    position += batch.sequences[0].num_tokens;
    const int32_t token =
        sampler.Sample({out->logits.data<float>(), static_cast<size_t>(out->logits.dim(1))}).token;
    ++generated;
    const auto& eos = engine.config().eos_token_ids;
    if (std::find(eos.begin(), eos.end(), token) != eos.end()) break;
    std::string delta;
    stream.Push(token, &delta);
    std::printf("%s", delta.c_str());
    std::fflush(stdout);
    batch = {{token}, {{position, 1, blocks, true}}};
  }
  std::string rest;
  stream.Finish(&rest);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s\n", rest.c_str());
  std::fprintf(stderr, "%d tokens in %.3f s (%.1f tok/s, prompt included)\n", generated, s,
               generated / s);
  return 0;
}

}  // namespace
}  // namespace switchyard

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return switchyard::Main();
}
