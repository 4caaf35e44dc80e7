// A Llama-family model's hyper-parameters, read from a Hugging Face config.json.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/core/activation.h"

namespace switchyard {

enum class Architecture { kLlama, kMistral, kQwen2 };

struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 };
  Type type = Type::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  std::string architecture_name;  // as written in config.json, e.g. "LlamaForCausalLM"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  // Per-frequency divisors of the inverse frequencies (a GGUF file's rope_freqs.weight, how
  // llama.cpp stores Llama 3.1 scaling); empty: none.
  std::vector<float> rope_freq_factors;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2 always; Llama with attention_bias
  bool o_bias = false;    // Llama with attention_bias
  bool mlp_bias = false;
  Activation hidden_act = Activation::kSilu;
  std::vector<int> sliding_window;  // per layer; 0 = full attention
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;

  // Parses and validates config.json text. Errors name the offending key.
  static absl::StatusOr<ModelConfig> FromJson(absl::string_view text);
  static absl::StatusOr<ModelConfig> Load(const std::string& model_dir);

  // The RoPE inverse frequencies (head_dim / 2 values) after scaling, in F32 as Hugging Face
  // computes them.
  std::vector<float> RopeInverseFrequencies() const;
};

absl::string_view ArchitectureName(Architecture a);

}  // namespace switchyard
