// A model in one GGUF file, as llama.cpp's converter writes it (architectures `llama`, which
// Mistral files use too, and `qwen2`): its hyper-parameters, weights and tokenizer, mapped back to
// the Hugging Face forms the rest of Switchyard reads. Each is translated into what a Hugging Face
// folder would hold (config.json, tokenizer.json, tokenizer_config.json) and validated by the same
// code that validates those, so a GGUF model and a folder cannot drift apart.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/model/config.h"
#include "engine/model/gguf.h"
#include "engine/model/weights.h"

namespace switchyard {

bool IsGgufPath(const std::string& path);

// config.json equivalent of the file's metadata.
absl::StatusOr<std::string> GgufConfigJson(const GgufFile& file);
absl::StatusOr<ModelConfig> GgufModelConfig(const GgufFile& file);

// The weights under their Hugging Face names, Q and K rows put back in Hugging Face's order (the
// converter interleaves them for llama.cpp's RoPE). `file` must outlive the source.
std::unique_ptr<WeightSource> GgufWeights(std::shared_ptr<const GgufFile> file,
                                          const ModelConfig& config);

struct TokenizerFiles {
  std::string tokenizer_json;
  std::string tokenizer_config_json;
};

// tokenizer.json and tokenizer_config.json equivalents of the file's tokenizer metadata: byte-level
// BPE (`gpt2`, with the `pre` types of Llama 3, Qwen2 and GPT-2) or SentencePiece BPE (`llama`,
// merges recovered from the scores as Hugging Face's converter does); the chat template from
// tokenizer.chat_template.
absl::StatusOr<TokenizerFiles> GgufTokenizerFiles(const GgufFile& file);

// llama.cpp's converter interleaves the rotary halves of each head's q and k rows (for the
// `llama` architecture): row 2i + j of each head goes back to row j * head_dim / 2 + i. `rows`
// holds `heads` heads of rows (any row width, any dtype).
absl::StatusOr<Tensor> UnpermuteRopeRows(const Tensor& rows, int heads);

}  // namespace switchyard
