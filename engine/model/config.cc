#include "engine/model/config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/core/json_util.h"
#include "engine/core/status_macros.h"

namespace switchyard {

absl::string_view ArchitectureName(Architecture a) {
  switch (a) {
    case Architecture::kLlama:
      return "llama";
    case Architecture::kMistral:
      return "mistral";
    case Architecture::kQwen2:
      return "qwen2";
  }
  return "?";
}

namespace {

absl::Status ParseRopeScaling(const nlohmann::json& j, RopeScaling* out) {
  if (!j.contains("rope_scaling") || j["rope_scaling"].is_null()) return absl::OkStatus();
  const nlohmann::json& rs = j["rope_scaling"];
  if (!rs.is_object())
    return absl::InvalidArgumentError("config.json: rope_scaling must be an object");
  std::string type;
  if (rs.contains("rope_type")) {
    SY_ASSIGN_OR_RETURN(type, json_util::GetString(rs, "rope_type", "rope_scaling"));
  } else {
    SY_ASSIGN_OR_RETURN(type, json_util::GetString(rs, "type", "rope_scaling"));
  }
  if (type == "default") return absl::OkStatus();
  SY_ASSIGN_OR_RETURN(out->factor, json_util::GetNumber(rs, "factor", "rope_scaling"));
  if (!(out->factor > 0))
    return absl::InvalidArgumentError("config.json: rope_scaling.factor must be > 0");
  if (type == "linear") {
    out->type = RopeScaling::Type::kLinear;
    return absl::OkStatus();
  }
  if (type == "llama3") {
    out->type = RopeScaling::Type::kLlama3;
    SY_ASSIGN_OR_RETURN(out->low_freq_factor,
                        json_util::GetNumber(rs, "low_freq_factor", "rope_scaling"));
    SY_ASSIGN_OR_RETURN(out->high_freq_factor,
                        json_util::GetNumber(rs, "high_freq_factor", "rope_scaling"));
    SY_ASSIGN_OR_RETURN(out->original_max_position_embeddings,
                        json_util::GetInt(rs, "original_max_position_embeddings", "rope_scaling"));
    if (!(out->high_freq_factor > out->low_freq_factor)) {
      return absl::InvalidArgumentError(
          "config.json: rope_scaling.high_freq_factor must exceed low_freq_factor");
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("config.json: rope_scaling type \"", type,
                   "\" is not supported (supported: linear, llama3)"));
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromJson(absl::string_view text) {
  SY_ASSIGN_OR_RETURN(nlohmann::json j, json_util::Parse(text, "config.json"));
  if (!j.is_object()) return absl::InvalidArgumentError("config.json: not a JSON object");
  ModelConfig c;
  if (!j.contains("architectures") || !j["architectures"].is_array() ||
      j["architectures"].empty() || !j["architectures"][0].is_string()) {
    return absl::InvalidArgumentError("config.json: \"architectures\" must list the model class");
  }
  c.architecture_name = j["architectures"][0].get<std::string>();
  if (c.architecture_name == "LlamaForCausalLM") {
    c.architecture = Architecture::kLlama;
  } else if (c.architecture_name == "MistralForCausalLM") {
    c.architecture = Architecture::kMistral;
  } else if (c.architecture_name == "Qwen2ForCausalLM") {
    c.architecture = Architecture::kQwen2;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: architecture \"", c.architecture_name,
        "\" is not supported (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)"));
  }
  constexpr absl::string_view kWhere = "config.json";
  SY_ASSIGN_OR_RETURN(c.vocab_size, json_util::GetInt(j, "vocab_size", kWhere));
  SY_ASSIGN_OR_RETURN(c.hidden_size, json_util::GetInt(j, "hidden_size", kWhere));
  SY_ASSIGN_OR_RETURN(c.intermediate_size, json_util::GetInt(j, "intermediate_size", kWhere));
  SY_ASSIGN_OR_RETURN(c.num_layers, json_util::GetInt(j, "num_hidden_layers", kWhere));
  SY_ASSIGN_OR_RETURN(c.num_heads, json_util::GetInt(j, "num_attention_heads", kWhere));
  SY_ASSIGN_OR_RETURN(c.num_kv_heads,
                      json_util::GetIntOr(j, "num_key_value_heads", c.num_heads, kWhere));
  SY_ASSIGN_OR_RETURN(c.max_position_embeddings,
                      json_util::GetIntOr(j, "max_position_embeddings", 2048, kWhere));
  SY_ASSIGN_OR_RETURN(c.rms_norm_eps, json_util::GetNumberOr(j, "rms_norm_eps", 1e-6, kWhere));
  SY_ASSIGN_OR_RETURN(c.rope_theta, json_util::GetNumberOr(j, "rope_theta", 10000.0, kWhere));
  SY_ASSIGN_OR_RETURN(c.tie_word_embeddings,
                      json_util::GetBoolOr(j, "tie_word_embeddings", false, kWhere));
  // Upper bounds far above any Llama-family model, so that sizes derived from them (tables,
  // buffers) cannot overflow or ask for absurd allocations before the weights are checked.
  struct Dim {
    const char* name;
    int64_t value, max;
  };
  for (const Dim& d :
       {Dim{"vocab_size", c.vocab_size, int64_t{1} << 22},
        Dim{"hidden_size", c.hidden_size, int64_t{1} << 17},
        Dim{"intermediate_size", c.intermediate_size, int64_t{1} << 20},
        Dim{"num_hidden_layers", c.num_layers, int64_t{1} << 12},
        Dim{"num_attention_heads", c.num_heads, int64_t{1} << 12},
        Dim{"num_key_value_heads", c.num_kv_heads, int64_t{1} << 12},
        Dim{"max_position_embeddings", c.max_position_embeddings, int64_t{1} << 26}}) {
    if (d.value <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: ", d.name, " must be positive"));
    }
    if (d.value > d.max) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.json: ", d.name, " of ", d.value, " exceeds the supported ", d.max));
    }
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return absl::InvalidArgumentError(
        "config.json: num_attention_heads must be a multiple of num_key_value_heads");
  }
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    SY_ASSIGN_OR_RETURN(c.head_dim, json_util::GetInt(j, "head_dim", kWhere));
  } else {
    if (c.hidden_size % c.num_heads != 0) {
      return absl::InvalidArgumentError(
          "config.json: hidden_size must be a multiple of num_attention_heads");
    }
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.head_dim <= 0 || c.head_dim % 2 != 0 || c.head_dim > 4096) {
    return absl::InvalidArgumentError("config.json: head_dim must be positive, even and <= 4096");
  }
  if (!(c.rms_norm_eps > 0))
    return absl::InvalidArgumentError("config.json: rms_norm_eps must be > 0");
  if (!(c.rope_theta > 0)) return absl::InvalidArgumentError("config.json: rope_theta must be > 0");

  std::string act = "silu";
  if (j.contains("hidden_act")) {
    SY_ASSIGN_OR_RETURN(act, json_util::GetString(j, "hidden_act", kWhere));
  }
  auto parsed_act = ParseActivation(act);
  if (!parsed_act.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: hidden_act: ", parsed_act.status().message()));
  }
  c.hidden_act = *parsed_act;

  SY_ASSIGN_OR_RETURN(bool attention_bias,
                      json_util::GetBoolOr(j, "attention_bias", false, kWhere));
  SY_ASSIGN_OR_RETURN(c.mlp_bias, json_util::GetBoolOr(j, "mlp_bias", false, kWhere));
  if (c.architecture == Architecture::kQwen2) {
    c.qkv_bias = true;
  } else if (c.architecture == Architecture::kLlama) {
    c.qkv_bias = attention_bias;
    c.o_bias = attention_bias;
  }

  SY_RETURN_IF_ERROR(ParseRopeScaling(j, &c.rope_scaling));

  c.sliding_window.assign(static_cast<size_t>(c.num_layers), 0);
  int64_t window = 0;
  if (j.contains("sliding_window") && !j["sliding_window"].is_null()) {
    SY_ASSIGN_OR_RETURN(window, json_util::GetInt(j, "sliding_window", kWhere));
    if (window <= 0)
      return absl::InvalidArgumentError("config.json: sliding_window must be positive");
  }
  if (c.architecture == Architecture::kMistral && window > 0) {
    c.sliding_window.assign(static_cast<size_t>(c.num_layers), static_cast<int>(window));
  } else if (c.architecture == Architecture::kQwen2 && window > 0) {
    // Qwen2 windows only layers at or above max_window_layers, and only when use_sliding_window.
    SY_ASSIGN_OR_RETURN(bool use, json_util::GetBoolOr(j, "use_sliding_window", false, kWhere));
    SY_ASSIGN_OR_RETURN(int64_t first,
                        json_util::GetIntOr(j, "max_window_layers", c.num_layers, kWhere));
    if (use) {
      for (int64_t l = first; l < c.num_layers; ++l) c.sliding_window[l] = static_cast<int>(window);
    }
  }

  SY_ASSIGN_OR_RETURN(c.bos_token_id, json_util::GetIntOr(j, "bos_token_id", -1, kWhere));
  if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
    const nlohmann::json& e = j["eos_token_id"];
    if (e.is_number_integer()) {
      c.eos_token_ids.push_back(e.get<int64_t>());
    } else if (e.is_array()) {
      for (const auto& v : e) {
        if (!v.is_number_integer()) {
          return absl::InvalidArgumentError("config.json: eos_token_id must hold integers");
        }
        c.eos_token_ids.push_back(v.get<int64_t>());
      }
    } else {
      return absl::InvalidArgumentError("config.json: eos_token_id must be an integer or a list");
    }
  }
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::Load(const std::string& model_dir) {
  SY_ASSIGN_OR_RETURN(std::string text, ReadFile(model_dir + "/config.json"));
  return FromJson(text);
}

std::vector<float> ModelConfig::RopeInverseFrequencies() const {
  const int64_t half = head_dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    // HF: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all in F32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv[i] = 1.0f / std::pow(static_cast<float>(rope_theta), exponent);
  }
  switch (rope_scaling.type) {
    case RopeScaling::Type::kNone:
      break;
    case RopeScaling::Type::kLinear:
      for (float& f : inv) f = static_cast<float>(f / rope_scaling.factor);
      break;
    case RopeScaling::Type::kLlama3: {
      const double factor = rope_scaling.factor;
      const double old_len = static_cast<double>(rope_scaling.original_max_position_embeddings);
      const double low_wavelen = old_len / rope_scaling.low_freq_factor;
      const double high_wavelen = old_len / rope_scaling.high_freq_factor;
      for (float& f : inv) {
        const float wavelen = static_cast<float>(2 * M_PI) / f;
        if (wavelen > low_wavelen) {
          f = static_cast<float>(f / factor);
        } else if (!(wavelen < high_wavelen)) {
          const float smooth =
              static_cast<float>((old_len / wavelen - rope_scaling.low_freq_factor) /
                                 (rope_scaling.high_freq_factor - rope_scaling.low_freq_factor));
          f = (1 - smooth) * static_cast<float>(f / factor) + smooth * f;
        }
      }
      break;
    }
  }
  for (size_t i = 0; i < rope_freq_factors.size() && i < inv.size(); ++i) {
    inv[i] = inv[i] / rope_freq_factors[i];
  }
  return inv;
}

}  // namespace switchyard
