#include "engine/adapters/loader.h"

#include <cmath>
#include <filesystem>
#include <map>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/adapters/expert_diagnostics.h"
#include "engine/adapters/gguf_lora.h"
#include "engine/adapters/torch_checkpoint.h"
#include "engine/core/confined_dir.h"
#include "engine/core/json_util.h"
#include "engine/core/status_macros.h"
#include "engine/model/gguf_model.h"
#include "engine/model/safetensors.h"

namespace switchyard {

absl::string_view LinearSiteName(LinearSite s) {
  static constexpr absl::string_view kNames[] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};
  return kNames[static_cast<int>(s)];
}

absl::string_view RoutingName(Routing r) {
  switch (r) {
    case Routing::kSingle:
      return "single";
    case Routing::kTopK:
      return "top-k";
    case Routing::kTopKRaw:
      return "top-k (raw)";
    case Routing::kTopP:
      return "top-p";
    case Routing::kDense:
      return "dense";
    case Routing::kSwitch:
      return "switch";
  }
  return "?";
}

float AdapterConfig::Scale(double alpha, int r, bool rslora) {
  return static_cast<float>(rslora ? alpha / std::sqrt(static_cast<double>(r))
                                   : alpha / static_cast<double>(r));
}

namespace {

constexpr absl::string_view kWhere = "adapter_config.json";
constexpr int64_t kMaxRouterMembers = 64;  // members of a router over adapters

absl::Status Bad(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(kWhere, ": ", what));
}

std::optional<LinearSite> SiteOf(absl::string_view name) {
  static const std::pair<absl::string_view, LinearSite> kNames[] = {
      {"q_proj", LinearSite::kQ},       {"k_proj", LinearSite::kK},
      {"v_proj", LinearSite::kV},       {"o_proj", LinearSite::kO},
      {"gate_proj", LinearSite::kGate}, {"up_proj", LinearSite::kUp},
      {"down_proj", LinearSite::kDown}, {"wq", LinearSite::kQ},
      {"wk", LinearSite::kK},           {"wv", LinearSite::kV},
      {"wo", LinearSite::kO},           {"w1_proj", LinearSite::kGate},
      {"w3_proj", LinearSite::kUp},     {"w2_proj", LinearSite::kDown},
      {"w1", LinearSite::kGate},        {"w3", LinearSite::kUp},
      {"w2", LinearSite::kDown}};
  for (const auto& [n, s] : kNames) {
    if (n == name) return s;
  }
  return std::nullopt;
}

bool IsAttention(LinearSite s) { return static_cast<int>(s) <= static_cast<int>(LinearSite::kO); }

absl::Status ParseTargets(const nlohmann::json& j, std::set<std::string>* out) {
  if (!j.contains("target_modules") || j["target_modules"].is_null()) return absl::OkStatus();
  const nlohmann::json& t = j["target_modules"];
  const auto add = [&](const std::string& name) -> absl::Status {
    auto site = SiteOf(name);
    if (!site) {
      return Bad(absl::StrCat("target module \"", name,
                              "\" is not a Llama linear (q/k/v/o_proj, gate/up/down_proj)"));
    }
    out->insert(std::string(LinearSiteName(*site)));
    return absl::OkStatus();
  };
  if (t.is_array()) {
    for (const auto& m : t) {
      if (!m.is_string()) return Bad("target_modules must hold names");
      SY_RETURN_IF_ERROR(add(m.get<std::string>()));
    }
  } else if (t.is_object()) {  // {name: bool}
    for (auto it = t.begin(); it != t.end(); ++it) {
      if (it.value().is_boolean() && it.value().get<bool>()) SY_RETURN_IF_ERROR(add(it.key()));
    }
  } else if (t.is_string()) {
    return Bad("target_modules as a regular expression is not supported; list the modules");
  } else {
    return Bad("target_modules must be a list");
  }
  return absl::OkStatus();
}

// peft_type MIXTURE: {"members": [folder, ...], "routing": "topk" | "dense", "top_k": k}.
absl::Status ParseMixtureConfig(const nlohmann::json& j, AdapterConfig* c) {
  if (!j.contains("members") || !j["members"].is_array()) {
    return Bad("members (the member adapters' folders) must be a list");
  }
  for (const auto& m : j["members"]) {
    if (!m.is_string() || m.get<std::string>().empty()) {
      return Bad("members must name folders below the mixture's own");
    }
    const std::string path = m.get<std::string>();
    if (path.front() == '/' || absl::StrContains(absl::StrCat("/", path, "/"), "/../")) {
      return Bad(absl::StrCat("member \"", path, "\" is not a folder below the mixture's own"));
    }
    c->members.push_back(path);
  }
  const int64_t n = static_cast<int64_t>(c->members.size());
  if (n < 2 || n > kMaxRouterMembers) {
    return Bad(absl::StrCat("members: ", n, " given; a mixture has 2 to ", kMaxRouterMembers));
  }
  std::string routing = "topk";
  if (j.contains("routing")) {
    SY_ASSIGN_OR_RETURN(routing, json_util::GetString(j, "routing", kWhere));
  }
  SY_ASSIGN_OR_RETURN(int64_t k, json_util::GetIntOr(j, "top_k", 2, kWhere));
  c->router.num_experts = static_cast<int>(n);
  if (routing == "dense") {
    c->router.routing = Routing::kDense;
  } else if (routing == "topk") {
    if (k < 1 || k > n) return Bad("top_k must be in [1, number of members]");
    c->router.routing = Routing::kTopK;
    c->router.top_k = static_cast<int>(k);
  } else {
    return Bad(absl::StrCat("routing \"", routing, "\" is not supported (topk or dense)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AdapterConfig> ParseAdapterConfig(absl::string_view json) {
  SY_ASSIGN_OR_RETURN(nlohmann::json j, json_util::Parse(json, kWhere));
  if (!j.is_object()) return Bad("not a JSON object");
  AdapterConfig c;
  std::string peft_type = "LORA";
  if (j.contains("peft_type")) {
    SY_ASSIGN_OR_RETURN(peft_type, json_util::GetString(j, "peft_type", kWhere));
  }
  peft_type = absl::AsciiStrToUpper(peft_type);
  std::string strategy;
  if (j.contains("routing_strategy")) {
    SY_ASSIGN_OR_RETURN(strategy, json_util::GetString(j, "routing_strategy", kWhere));
  }
  if (strategy == "mixtral" || strategy == "switch") {  // legacy mLoRA MixLoRA
    c.family = AdapterConfig::Family::kMixLora;
    c.legacy_mlora = true;
    strategy = strategy == "mixtral" ? "mixlora" : "mixlora-switch";
  } else if (peft_type == "MIXLORA") {
    c.family = AdapterConfig::Family::kMixLora;
  } else if (peft_type == "LORAMOE") {
    c.family = AdapterConfig::Family::kLoraMoe;
  } else if (peft_type == "MOLA") {
    c.family = AdapterConfig::Family::kMola;
  } else if (peft_type == "LORA") {
    c.family = AdapterConfig::Family::kPeft;
  } else if (peft_type == "MHMOE_LORA") {
    c.family = AdapterConfig::Family::kMhMoeLora;
  } else if (peft_type == "MIXTURE") {
    c.family = AdapterConfig::Family::kMixture;
    SY_RETURN_IF_ERROR(ParseMixtureConfig(j, &c));
    return c;
  } else {
    return Bad(absl::StrCat("peft_type \"", peft_type,
                            "\" is not supported (supported: MIXLORA, LORAMOE, MOLA, LORA, "
                            "MHMOE_LORA, MIXTURE)"));
  }

  SY_ASSIGN_OR_RETURN(int64_t r, json_util::GetInt(j, "r", kWhere));
  SY_ASSIGN_OR_RETURN(c.alpha, json_util::GetNumber(j, "lora_alpha", kWhere));
  SY_ASSIGN_OR_RETURN(c.rslora, json_util::GetBoolOr(j, "use_rslora", false, kWhere));
  SY_ASSIGN_OR_RETURN(c.use_dora, json_util::GetBoolOr(j, "use_dora", false, kWhere));
  if (r <= 0 || r > 4096) return Bad("r must be in [1, 4096]");
  if (!(c.alpha > 0) || !std::isfinite(c.alpha)) return Bad("lora_alpha must be positive");
  c.r = static_cast<int>(r);
  c.expert_r = c.r;
  c.expert_alpha = c.alpha;
  c.expert_rslora = c.rslora;
  if (j.contains("expert_lora") && !j["expert_lora"].is_null()) {
    const nlohmann::json& e = j["expert_lora"];
    if (!e.is_object()) return Bad("expert_lora must be an object");
    SY_ASSIGN_OR_RETURN(int64_t er,
                        json_util::GetIntOr(e, "r", c.r, "adapter_config.json expert_lora"));
    SY_ASSIGN_OR_RETURN(c.expert_alpha, json_util::GetNumberOr(e, "lora_alpha", c.alpha,
                                                               "adapter_config.json expert_lora"));
    SY_ASSIGN_OR_RETURN(c.expert_rslora, json_util::GetBoolOr(e, "use_rslora", c.rslora,
                                                              "adapter_config.json expert_lora"));
    if (er <= 0 || er > 4096 || !(c.expert_alpha > 0))
      return Bad("expert_lora: bad r or lora_alpha");
    c.expert_r = static_cast<int>(er);
  }
  SY_RETURN_IF_ERROR(ParseTargets(j, &c.targets));

  if (c.family == AdapterConfig::Family::kPeft) {
    SY_ASSIGN_OR_RETURN(bool fan, json_util::GetBoolOr(j, "fan_in_fan_out", false, kWhere));
    if (fan) return Bad("fan_in_fan_out adapters (GPT-2 Conv1D) do not apply to Llama models");
    if (j.contains("bias") && j["bias"].is_string() && j["bias"].get<std::string>() != "none") {
      return Bad("LoRA bias training (\"bias\" other than \"none\") is not supported");
    }
    for (const char* key : {"rank_pattern", "alpha_pattern"}) {
      if (j.contains(key) && j[key].is_object() && !j[key].empty()) {
        return Bad(absl::StrCat(key, " (per-module ranks) is not supported"));
      }
    }
    if (j.contains("modules_to_save") && j["modules_to_save"].is_array() &&
        !j["modules_to_save"].empty()) {
      return Bad("modules_to_save (fully trained modules) is not supported");
    }
    SY_ASSIGN_OR_RETURN(int64_t nums, json_util::GetIntOr(j, "lora_nums", 0, kWhere));
    if (nums < 0 || nums > 1024) return Bad("lora_nums must be in [0, 1024]");
    c.lora_nums = static_cast<int>(nums);
    c.router.routing = c.lora_nums > 0 ? Routing::kDense : Routing::kSingle;
    c.router.num_experts = std::max(1, c.lora_nums);
    return c;
  }

  SY_ASSIGN_OR_RETURN(int64_t experts, json_util::GetInt(j, "num_experts", kWhere));
  if (experts < 1 || experts > 1024) return Bad("num_experts must be in [1, 1024]");
  c.router.num_experts = static_cast<int>(experts);
  const auto top_k = [&]() -> absl::Status {
    if (j.contains("top_k") && j["top_k"].is_array()) {
      for (const auto& k : j["top_k"]) {
        if (!k.is_number_integer() || k.get<int64_t>() < 1 || k.get<int64_t>() > experts) {
          return Bad("top_k entries must be in [1, num_experts]");
        }
        c.top_k_per_layer.push_back(k.get<int>());
      }
      c.router.top_k = c.top_k_per_layer.empty() ? 1 : c.top_k_per_layer[0];
      return absl::OkStatus();
    }
    SY_ASSIGN_OR_RETURN(int64_t k, json_util::GetIntOr(j, "top_k", 2, kWhere));
    if (k < 1 || k > experts) return Bad("top_k must be in [1, num_experts]");
    c.router.top_k = static_cast<int>(k);
    return absl::OkStatus();
  };

  switch (c.family) {
    case AdapterConfig::Family::kMixLora:
      if (strategy.empty()) strategy = "mixlora";
      if (strategy == "mixlora") {
        c.router.routing = Routing::kTopK;
        SY_RETURN_IF_ERROR(top_k());
      } else if (strategy == "mixlora-dynamic") {
        c.router.routing = Routing::kTopP;
        SY_ASSIGN_OR_RETURN(double p, json_util::GetNumberOr(j, "top_p", 0.8, kWhere));
        SY_ASSIGN_OR_RETURN(double t, json_util::GetNumberOr(j, "temperature", 0.0, kWhere));
        if (!(p > 0 && p <= 1)) return Bad("top_p must be in (0, 1]");
        if (!(t >= 0) || !std::isfinite(t)) return Bad("temperature must be >= 0");
        c.router.top_p = static_cast<float>(p);
        c.router.temperature = static_cast<float>(t);
      } else if (strategy == "mixlora-switch") {
        c.router.routing = Routing::kSwitch;
        c.router.top_k = 1;
      } else {
        return Bad(absl::StrCat("routing_strategy \"", strategy,
                                "\" is unknown (known: mixlora, mixlora-dynamic, mixlora-switch)"));
      }
      if (j.contains("act_fn") && j["act_fn"].is_string()) {
        c.act_fn = j["act_fn"].get<std::string>();
        if (!ParseActivation(c.act_fn).ok())
          return Bad(absl::StrCat("act_fn \"", c.act_fn, "\" is unsupported"));
      }
      break;
    case AdapterConfig::Family::kLoraMoe:
      if (!strategy.empty() && strategy != "loramoe")
        return Bad("LORAMOE needs routing_strategy loramoe");
      c.router.routing = Routing::kDense;
      break;
    case AdapterConfig::Family::kMola:
      if (!strategy.empty() && strategy != "mola") return Bad("MOLA needs routing_strategy mola");
      c.router.routing = Routing::kTopK;
      SY_RETURN_IF_ERROR(top_k());
      break;
    case AdapterConfig::Family::kMhMoeLora: {
      SY_ASSIGN_OR_RETURN(int64_t heads, json_util::GetInt(j, "num_heads", kWhere));
      SY_ASSIGN_OR_RETURN(int64_t hr, json_util::GetIntOr(j, "head_rank", 0, kWhere));
      SY_ASSIGN_OR_RETURN(int64_t mr, json_util::GetIntOr(j, "merge_rank", 0, kWhere));
      SY_ASSIGN_OR_RETURN(bool renorm, json_util::GetBoolOr(j, "renormalize", false, kWhere));
      if (heads < 1 || heads > 64) return Bad("num_heads must be in [1, 64]");
      if (hr < 0 || mr < 0 || hr > 4096 || mr > 4096)
        return Bad("head_rank/merge_rank must be >= 0");
      c.heads = static_cast<int>(heads);
      c.head_rank = static_cast<int>(hr);
      c.merge_rank = static_cast<int>(mr);
      c.router.routing = renorm ? Routing::kTopK : Routing::kTopKRaw;
      SY_RETURN_IF_ERROR(top_k());
      break;
    }
    case AdapterConfig::Family::kPeft:
    case AdapterConfig::Family::kMixture:  // its own config, parsed by ParseMixtureConfig
      break;
  }
  return c;
}

namespace {

// Dimensions of a base linear.
struct Dims {
  int64_t in, out;
};
Dims SiteDims(const ModelConfig& m, LinearSite s) {
  const int64_t d = m.hidden_size, q = m.num_heads * m.head_dim, kv = m.num_kv_heads * m.head_dim;
  switch (s) {
    case LinearSite::kQ:
      return {d, q};
    case LinearSite::kK:
    case LinearSite::kV:
      return {d, kv};
    case LinearSite::kO:
      return {q, d};
    case LinearSite::kGate:
    case LinearSite::kUp:
      return {d, m.intermediate_size};
    case LinearSite::kDown:
      return {m.intermediate_size, d};
  }
  return {0, 0};
}

// Tensors of one routed site or one MixLoRA expert projection, as found on disk.
struct RawLora {
  std::optional<Tensor> a, b;
};
struct RawSite {
  std::optional<Tensor> router;
  std::map<int, RawLora> experts;  // -1: the single / shared entry
  std::optional<Tensor> shared_a;
  RawLora head, merge;
};
struct RawMix {
  std::optional<Tensor> router;
  std::map<int, std::map<LinearSite, RawLora>> experts;
};

struct Raw {
  std::map<std::pair<int, LinearSite>, RawSite> sites;
  std::map<int, RawMix> mix;
};

bool ParseIndex(absl::string_view s, int* out) {
  return absl::SimpleAtoi(s, out) && *out >= 0 && *out < (1 << 20);
}

// Assigns a tensor to its place in `raw`, or says why the name is not understood.
absl::Status Place(const AdapterConfig& c, const std::string& name, Tensor t, Raw* raw) {
  const auto unknown = [&]() {
    return absl::InvalidArgumentError(absl::StrCat("adapter weights: tensor \"", name,
                                                   "\" is not part of this adapter's format"));
  };
  std::vector<std::string> p = absl::StrSplit(name, '.');
  // Prefix: <family>.layers.L. or base_model.model.model.layers.L.
  size_t i = 0;
  if (c.family == AdapterConfig::Family::kPeft) {
    if (p.size() < 5 || p[0] != "base_model" || p[1] != "model" || p[2] != "model" ||
        p[3] != "layers") {
      return unknown();
    }
    i = 4;
  } else {
    static const char* kPrefix[] = {"mixlora", "loramoe", "mola", "", "mhmoe"};
    if (p.size() < 3 || p[0] != kPrefix[static_cast<int>(c.family)] || p[1] != "layers") {
      return unknown();
    }
    i = 2;
  }
  int layer;
  if (i >= p.size() || !ParseIndex(p[i], &layer)) return unknown();
  std::vector<std::string> rest(p.begin() + static_cast<ptrdiff_t>(i) + 1, p.end());
  if (rest.empty() || rest.back() != "weight") return unknown();
  rest.pop_back();
  if (!rest.empty() && rest.back() == "default") rest.pop_back();  // PEFT adapter name
  const auto lora_part = [](const std::string& s, RawLora* r) -> std::optional<Tensor>* {
    if (s == "lora_A") return &r->a;
    if (s == "lora_B") return &r->b;
    return nullptr;
  };

  if (c.family == AdapterConfig::Family::kMixLora) {
    if (c.legacy_mlora) {
      // gate.weight | experts.E.PROJ.lora_X | self_attn.PROJ.lora_X
      if (rest.size() == 1 && rest[0] == "gate") {
        raw->mix[layer].router = std::move(t);
        return absl::OkStatus();
      }
      int e;
      if (rest.size() == 4 && rest[0] == "experts" && ParseIndex(rest[1], &e)) {
        auto site = SiteOf(rest[2]);
        if (!site || IsAttention(*site)) return unknown();
        auto* slot = lora_part(rest[3], &raw->mix[layer].experts[e][*site]);
        if (slot == nullptr) return unknown();
        *slot = std::move(t);
        return absl::OkStatus();
      }
    } else {
      if (rest.size() == 2 && rest[0] == "mlp" && rest[1] == "moe_gate") {
        raw->mix[layer].router = std::move(t);
        return absl::OkStatus();
      }
      int e;
      if (rest.size() == 5 && rest[0] == "mlp" && rest[2] == "experts" && ParseIndex(rest[3], &e)) {
        auto site = SiteOf(rest[1]);
        if (!site || IsAttention(*site)) return unknown();
        auto* slot = lora_part(rest[4], &raw->mix[layer].experts[e][*site]);
        if (slot == nullptr) return unknown();
        *slot = std::move(t);
        return absl::OkStatus();
      }
    }
    if (rest.size() == 3 && rest[0] == "self_attn") {
      auto site = SiteOf(rest[1]);
      if (!site || !IsAttention(*site)) return unknown();
      auto* slot = lora_part(rest[2], &raw->sites[{layer, *site}].experts[-1]);
      if (slot == nullptr) return unknown();
      *slot = std::move(t);
      return absl::OkStatus();
    }
    return unknown();
  }

  // Per-linear families: {self_attn|mlp}.PROJ.<part...>
  if (rest.size() < 3 || (rest[0] != "self_attn" && rest[0] != "mlp")) return unknown();
  auto site = SiteOf(rest[1]);
  if (!site || IsAttention(*site) != (rest[0] == "self_attn")) return unknown();
  RawSite& rs = raw->sites[{layer, *site}];
  std::vector<std::string> part(rest.begin() + 2, rest.end());

  if (c.family == AdapterConfig::Family::kPeft) {
    if (part.size() != 1) return unknown();
    const std::string& s = part[0];
    int e;
    if (s == "lora_A") {
      rs.shared_a = std::move(t);
    } else if (s == "lora_B") {
      rs.experts[-1].b = std::move(t);
    } else if (s == "lora_route") {
      rs.router = std::move(t);
    } else if (absl::StartsWith(s, "lora_A") && ParseIndex(s.substr(6), &e)) {
      rs.experts[e].a = std::move(t);
    } else if (absl::StartsWith(s, "lora_B") && ParseIndex(s.substr(6), &e)) {
      rs.experts[e].b = std::move(t);
    } else {
      return unknown();
    }
    return absl::OkStatus();
  }
  // MoE-PEFT LoRAMoE / MoLA and MH-MoE-LoRA.
  const std::string gate_name =
      c.family == AdapterConfig::Family::kMhMoeLora ? "router" : "moe_gate";
  int e;
  if (part.size() == 1 && part[0] == gate_name) {
    rs.router = std::move(t);
  } else if (part.size() == 3 && part[0] == "experts" && ParseIndex(part[1], &e)) {
    auto* slot = lora_part(part[2], &rs.experts[e]);
    if (slot == nullptr) return unknown();
    *slot = std::move(t);
  } else if (part.size() == 1 && c.family == AdapterConfig::Family::kLoraMoe) {
    // LoRAMoE's plain LoRA on attention: PROJ.lora_X
    auto* slot = lora_part(part[0], &rs.experts[-1]);
    if (slot == nullptr) return unknown();
    *slot = std::move(t);
  } else if (part.size() == 2 && c.family == AdapterConfig::Family::kMhMoeLora &&
             (part[0] == "head" || part[0] == "merge")) {
    auto* slot = lora_part(part[1], part[0] == "head" ? &rs.head : &rs.merge);
    if (slot == nullptr) return unknown();
    *slot = std::move(t);
  } else {
    return unknown();
  }
  return absl::OkStatus();
}

class Builder {
 public:
  Builder(const AdapterConfig& c, const ModelConfig& m, Backend& b, DType lora_dtype)
      : c_(c), m_(m), backend_(b), lora_dtype_(lora_dtype) {}

  // A router: F32 whatever the LoRA dtype.
  // `host` (may be null) receives the F32 values, for the expert diagnostics.
  absl::StatusOr<Weight> Router(const Tensor& t, int64_t rows, int64_t cols,
                                const std::string& what, Tensor* host = nullptr) {
    return Matrix(t, rows, cols, what, 1.0f, WeightUse::kDefault, DType::kF32, host);
  }

  absl::StatusOr<Weight> Matrix(const Tensor& t, int64_t rows, int64_t cols,
                                const std::string& what, float scale, WeightUse use, DType dtype,
                                Tensor* host = nullptr) {
    if (t.rank() != 2 || t.dim(0) != rows || t.dim(1) != cols) {
      return absl::InvalidArgumentError(absl::StrCat("adapter weights: ", what, " has shape ",
                                                     ShapeString(t.shape()), ", expected [", rows,
                                                     ", ", cols, "]"));
    }
    Tensor f = Tensor::Empty(DType::kF32, t.shape());
    ConvertToF32(t.dtype(), t.raw(), f.data<float>(), static_cast<size_t>(t.numel()));
    for (int64_t i = 0; i < f.numel(); ++i) {
      float& v = f.data<float>()[i];
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(
            absl::StrCat("adapter weights: ", what, " holds a non-finite value (NaN or Inf)"));
      }
      v *= scale;
    }
    if (host != nullptr) *host = f;
    if (dtype == DType::kBF16) {
      Tensor h = Tensor::Empty(DType::kBF16, f.shape());
      for (int64_t i = 0; i < f.numel(); ++i) h.data<uint16_t>()[i] = F32ToBF16(f.data<float>()[i]);
      f = h;
    }
    SY_ASSIGN_OR_RETURN(Weight w, backend_.PrepareWeight(f, use));
    bytes_ += w.bytes();
    return w;
  }

  // A LoRA pair of rank `r` on a [in -> out] map; `b` absorbs `scale`. `host` (may be null)
  // receives the pair in F32, for the expert diagnostics.
  absl::StatusOr<LoraPair> Pair(const RawLora& raw, int64_t in, int64_t out, int r, float scale,
                                const std::string& what, HostLora* host = nullptr) {
    if (!raw.a || !raw.b) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter weights: ", what, " lacks lora_", raw.a ? "B" : "A"));
    }
    if (raw.a->rank() != 2 || raw.a->dim(0) != r) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter weights: ", what, ".lora_A has shape ", ShapeString(raw.a->shape()),
                       ", expected rank ", r, " (from the config)"));
    }
    LoraPair p;
    p.rank = r;
    SY_ASSIGN_OR_RETURN(p.a, Matrix(*raw.a, r, in, what + ".lora_A", 1.0f, WeightUse::kDefault,
                                    lora_dtype_, host ? &host->a : nullptr));
    // Ranks above 256 keep B in F32 (the CPU expand widens BF16 blocks of up to 256 rows).
    SY_ASSIGN_OR_RETURN(p.b,
                        Matrix(*raw.b, out, r, what + ".lora_B", scale, WeightUse::kExpand,
                               r <= 256 ? lora_dtype_ : DType::kF32, host ? &host->b : nullptr));
    return p;
  }

  size_t bytes() const { return bytes_; }

 private:
  const AdapterConfig& c_;
  const ModelConfig& m_;
  Backend& backend_;
  DType lora_dtype_;
  size_t bytes_ = 0;
};

std::string SiteLabel(int layer, LinearSite s) {
  return absl::StrCat("layer ", layer, " ", LinearSiteName(s));
}

}  // namespace

namespace {

// adapter_config.json is a few hundred bytes; anything past this is not one.
constexpr size_t kMaxConfigBytes = size_t{4} << 20;

// The adapter's tensors from adapter_model.safetensors (read into memory, not mapped: a file
// truncated while mapped would kill the process with SIGBUS) or adapter_model.bin.
absl::Status ReadWeights(const ConfinedDir& dir, std::vector<NamedTensor>* tensors,
                         std::string* format) {
  if (dir.Exists("adapter_model.safetensors")) {
    const std::string path = dir.PathOf("adapter_model.safetensors");
    SY_ASSIGN_OR_RETURN(UniqueFd fd, dir.OpenFile("adapter_model.safetensors"));
    SY_ASSIGN_OR_RETURN(std::string bytes, ReadAll(fd.get(), SIZE_MAX / 2, path));
    SY_ASSIGN_OR_RETURN(auto file, SafetensorsFile::FromBytes(std::move(bytes), path));
    for (const SafetensorsEntry& e : file->entries()) {
      SY_ASSIGN_OR_RETURN(Tensor t, file->Get(e.name));
      if (t.dtype() == DType::kI32) {
        return absl::InvalidArgumentError(
            absl::StrCat("adapter weights: \"", e.name, "\" is an integer tensor"));
      }
      tensors->push_back({e.name, t});
    }
    *format = "safetensors";
    return absl::OkStatus();
  }
  if (dir.Exists("adapter_model.bin")) {
    SY_ASSIGN_OR_RETURN(UniqueFd fd, dir.OpenFile("adapter_model.bin"));
    SY_ASSIGN_OR_RETURN(*tensors,
                        ReadTorchCheckpointFd(fd.release(), dir.PathOf("adapter_model.bin")));
    *format = "torch .bin";
    return absl::OkStatus();
  }
  return absl::NotFoundError(
      absl::StrCat("no adapter_model.safetensors or adapter_model.bin in ", dir.path()));
}

}  // namespace

namespace {

// A GGUF LoRA names the architecture it was made for; llama.cpp writes Mistral as "llama".
absl::Status CheckGgufBase(const AdapterFiles& files, const ModelConfig& m) {
  const std::string& arch = files.gguf_architecture;
  const bool fits = arch == "qwen2" ? m.architecture == Architecture::kQwen2
                                    : arch == "llama" && m.architecture != Architecture::kQwen2;
  if (!fits) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the GGUF adapter is for a \"", arch, "\" model; the base model is ", m.architecture_name));
  }
  return absl::OkStatus();
}

// A GGUF LoRA's q/k lora_B for the llama architecture has its rows in llama.cpp's interleaved
// RoPE order (as the base's q/k rows in a GGUF file): back to Hugging Face's. Rows that do not
// match the base's heads are left for the builder to refuse by their shape.
absl::StatusOr<Tensor> InHuggingFaceOrder(const AdapterFiles& files, const ModelConfig& m,
                                          const NamedTensor& nt) {
  if (files.gguf_architecture != "llama" || !absl::EndsWith(nt.name, ".lora_B.weight")) {
    return nt.tensor;
  }
  int64_t heads = 0;
  if (absl::StrContains(nt.name, ".self_attn.q_proj.")) heads = m.num_heads;
  if (absl::StrContains(nt.name, ".self_attn.k_proj.")) heads = m.num_kv_heads;
  if (heads == 0 || nt.tensor.dim(0) != heads * m.head_dim || m.head_dim % 2 != 0) {
    return nt.tensor;
  }
  return UnpermuteRopeRows(nt.tensor, static_cast<int>(heads));
}

absl::StatusOr<std::unique_ptr<AdapterFiles>> ReadAdapterFilesUnguarded(const ConfinedDir& dir) {
  const std::string gguf = !dir.file().empty() ? dir.file()
                           : !dir.Exists("adapter_config.json") && dir.Exists(kGgufLoraFile)
                               ? kGgufLoraFile
                               : "";
  if (!gguf.empty()) {
    const std::string path = dir.PathOf(gguf);
    SY_ASSIGN_OR_RETURN(UniqueFd fd, dir.OpenFile(gguf));
    SY_ASSIGN_OR_RETURN(std::string bytes, ReadAll(fd.get(), SIZE_MAX / 2, path));
    return ReadGgufLora(std::move(bytes), path);
  }
  absl::StatusOr<std::string> config_text = dir.ReadFile("adapter_config.json", kMaxConfigBytes);
  if (!config_text.ok()) {
    return absl::Status(config_text.status().code(),
                        absl::StrCat("cannot open ", dir.PathOf("adapter_config.json"), ": ",
                                     config_text.status().message()));
  }
  auto files = std::make_unique<AdapterFiles>();
  SY_ASSIGN_OR_RETURN(files->config, ParseAdapterConfig(*config_text));
  SY_RETURN_IF_ERROR(ReadWeights(dir, &files->tensors, &files->format));
  for (const NamedTensor& nt : files->tensors) files->bytes += nt.tensor.nbytes();
  for (const std::string& member : files->config.members) {
    absl::StatusOr<ConfinedDir> sub = dir.Sub(member);
    if (!sub.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(dir.PathOf(member), ": member of ", dir.path(),
                                                     ": ", sub.status().message()));
    }
    SY_ASSIGN_OR_RETURN(std::unique_ptr<AdapterFiles> m, ReadAdapterFilesUnguarded(*sub));
    if (m->config.family == AdapterConfig::Family::kMixture) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir.PathOf(member), ": a mixture's member cannot be a mixture"));
    }
    files->bytes += m->bytes;
    files->members.push_back(std::move(m));
  }
  return files;
}

// Why a member cannot serve in a router over adapters at `layer`, or OK.
absl::Status CheckRouterMember(const AdapterWeights& member, const std::string& path, int layer) {
  for (int s = 0; s < static_cast<int>(LinearSite::kGate); ++s) {
    if (member.layers[layer].sites[s] != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("member ", path, " has LoRA on ", LinearSiteName(static_cast<LinearSite>(s)),
                       " of layer ", layer,
                       ": a mixture routes its members' FFN only (attention runs before "
                       "the FFN input its router reads)"));
    }
  }
  return absl::OkStatus();
}

// True when the member changes the FFN of `layer`.
bool ActsOnFfn(const AdapterLayer& l) {
  return l.ffn != nullptr || l.sites[static_cast<int>(LinearSite::kGate)] != nullptr ||
         l.sites[static_cast<int>(LinearSite::kUp)] != nullptr ||
         l.sites[static_cast<int>(LinearSite::kDown)] != nullptr;
}

// A router over adapters (peft_type MIXTURE): its members built, checked, and its routers.
absl::StatusOr<std::unique_ptr<AdapterWeights>> BuildRouterOverAdapters(const AdapterFiles& files,
                                                                        const ModelConfig& m,
                                                                        Backend& backend,
                                                                        DType lora_dtype,
                                                                        bool diagnose) {
  const AdapterConfig& c = files.config;
  auto adapter = std::make_unique<AdapterWeights>();
  adapter->family = "mixture";
  adapter->format = absl::StrCat(files.format, ", ", c.members.size(), " members");
  adapter->layers.resize(static_cast<size_t>(m.num_layers));
  // Its members' diagnostics are not served: none computed.
  if (diagnose) adapter->diagnostics = std::make_shared<AdapterDiagnostics>();
  auto router = std::make_unique<AdapterRouter>();
  router->spec = c.router;
  router->routers.resize(static_cast<size_t>(m.num_layers));
  for (size_t i = 0; i < files.members.size(); ++i) {
    SY_ASSIGN_OR_RETURN(std::unique_ptr<AdapterWeights> member,
                        BuildAdapter(*files.members[i], m, backend, lora_dtype, false));
    member->name = c.members[i];
    for (int l = 0; l < m.num_layers; ++l) {
      SY_RETURN_IF_ERROR(CheckRouterMember(*member, c.members[i], l));
    }
    adapter->bytes += member->bytes;
    router->members.push_back(std::move(member));
  }
  const int M = static_cast<int>(router->members.size());
  Builder b(c, m, backend, lora_dtype);
  for (const NamedTensor& nt : files.tensors) {
    int layer = -1;
    std::vector<absl::string_view> part = absl::StrSplit(nt.name, '.');
    if (part.size() != 5 || part[0] != "mixture" || part[1] != "layers" ||
        !absl::SimpleAtoi(part[2], &layer) || part[3] != "router" || part[4] != "weight" ||
        layer < 0 || layer >= m.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat(
          "adapter weights: unexpected tensor ", nt.name,
          " (a mixture holds mixture.layers.{layer}.router.weight, layer < ", m.num_layers, ")"));
    }
    SY_ASSIGN_OR_RETURN(router->routers[layer], b.Router(nt.tensor, M, m.hidden_size, nt.name));
  }
  for (int l = 0; l < m.num_layers; ++l) {
    int acting = 0, mixlora = 0;
    for (const auto& member : router->members) {
      acting += ActsOnFfn(member->layers[l]);
      mixlora += member->layers[l].ffn != nullptr;
    }
    if (acting > 0 && !router->routers[l].defined()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "adapter weights: layer ", l, " has members that change its FFN but no router ",
          "(mixture.layers.", l, ".router.weight)"));
    }
    if (mixlora != 0 && mixlora != M) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", l, ": ", mixlora, " of ", M,
                       " members have a MixLoRA block; a mixture's "
                       "members have one on a layer all together or none"));
    }
  }
  adapter->bytes += b.bytes();
  adapter->router = std::move(router);
  return adapter;
}

absl::StatusOr<std::unique_ptr<AdapterWeights>> BuildAdapterUnguarded(const AdapterFiles& files,
                                                                      const ModelConfig& m,
                                                                      Backend& backend,
                                                                      DType lora_dtype,
                                                                      bool diagnose) {
  if (lora_dtype != DType::kF32 && lora_dtype != DType::kBF16) {
    return absl::InvalidArgumentError("adapter weights are held in F32 or BF16");
  }
  if (files.config.family == AdapterConfig::Family::kMixture) {
    return BuildRouterOverAdapters(files, m, backend, lora_dtype, diagnose);
  }
  const AdapterConfig& c = files.config;
  const std::string& format = files.format;
  const char* family_names[] = {"mixlora", "loramoe", "mola", "lora", "mhmoe-lora", "mixture"};

  if (!files.gguf_architecture.empty()) SY_RETURN_IF_ERROR(CheckGgufBase(files, m));
  Raw raw;  // the tensors' handles (their memory stays the files', but for re-ordered copies)
  for (const NamedTensor& nt : files.tensors) {
    SY_ASSIGN_OR_RETURN(Tensor t, InHuggingFaceOrder(files, m, nt));
    SY_RETURN_IF_ERROR(Place(c, nt.name, std::move(t), &raw));
  }

  auto adapter = std::make_unique<AdapterWeights>();
  adapter->format = absl::StrCat(c.legacy_mlora ? "mLoRA legacy " : "", format);
  adapter->layers.resize(static_cast<size_t>(m.num_layers));
  Builder b(c, m, backend, lora_dtype);
  auto diagnostics = std::make_shared<AdapterDiagnostics>();
  const auto diagnose_site = [&](int layer, std::string site, std::span<const HostLora> experts,
                                 const Tensor& router) {
    if (diagnose)
      diagnostics->sites.push_back(DiagnoseSite(layer, std::move(site), experts, router));
  };
  const auto check_layer = [&](int layer) -> absl::Status {
    if (layer >= m.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("adapter weights name layer ", layer,
                                                     " but the base model has ", m.num_layers));
    }
    return absl::OkStatus();
  };
  const float scale = AdapterConfig::Scale(c.alpha, c.r, c.rslora);
  const float expert_scale = AdapterConfig::Scale(c.expert_alpha, c.expert_r, c.expert_rslora);
  std::string family = family_names[static_cast<int>(c.family)];

  // MixLoRA FFN blocks.
  for (auto& [layer, mix] : raw.mix) {
    SY_RETURN_IF_ERROR(check_layer(layer));
    if (!mix.router) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter weights: layer ", layer, " has experts but no router (moe_gate)"));
    }
    if (mix.experts.empty()) continue;  // MoE-PEFT writes a router for every layer
    auto block = std::make_unique<MixLoraBlock>();
    block->spec = c.router;
    const int E = c.router.num_experts;
    if (static_cast<int>(mix.experts.size()) != E || mix.experts.rbegin()->first != E - 1) {
      return absl::InvalidArgumentError(absl::StrCat("adapter weights: layer ", layer, " has ",
                                                     mix.experts.size(), " experts, config says ",
                                                     E));
    }
    Tensor router_host;
    SY_ASSIGN_OR_RETURN(block->router,
                        b.Router(*mix.router, E, m.hidden_size,
                                 absl::StrCat("layer ", layer, " router"), &router_host));
    std::array<std::vector<HostLora>, 3> host;  // gate, up, down
    SY_ASSIGN_OR_RETURN(Activation act, c.act_fn.empty() ? absl::StatusOr<Activation>(m.hidden_act)
                                                         : ParseActivation(c.act_fn));
    block->act = act;
    for (auto& [e, projs] : mix.experts) {
      MixLoraExpert ex;
      for (auto& [site, pair] : projs) {
        const std::string label = absl::StrCat(SiteLabel(layer, site), " expert ", e);
        if (!c.targets.empty() && !c.targets.contains(std::string(LinearSiteName(site)))) {
          return absl::InvalidArgumentError(absl::StrCat(
              "adapter weights: ", label, " is not among the config's target_modules"));
        }
        const Dims d = SiteDims(m, site);
        const int slot = site == LinearSite::kGate ? 0 : (site == LinearSite::kUp ? 1 : 2);
        host[slot].emplace_back();
        SY_ASSIGN_OR_RETURN(ex.lora[slot], b.Pair(pair, d.in, d.out, c.expert_r, expert_scale,
                                                  label, &host[slot].back()));
      }
      block->experts.push_back(std::move(ex));
    }
    for (int slot = 0; slot < 3; ++slot) {
      if (static_cast<int>(host[slot].size()) != E) continue;  // not every expert adapts it
      const LinearSite site =
          slot == 0 ? LinearSite::kGate : (slot == 1 ? LinearSite::kUp : LinearSite::kDown);
      diagnose_site(layer, absl::StrCat("ffn.", LinearSiteName(site)), host[slot], router_host);
    }
    adapter->layers[layer].ffn = std::move(block);
  }

  // Routed (or plain) LoRA on single linears.
  for (auto& [key, rs] : raw.sites) {
    const auto [layer, site] = key;
    SY_RETURN_IF_ERROR(check_layer(layer));
    const std::string label = SiteLabel(layer, site);
    if (!c.targets.empty() && !c.targets.contains(std::string(LinearSiteName(site)))) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter weights: ", label, " is not among the config's target_modules"));
    }
    const Dims d = SiteDims(m, site);
    auto out = std::make_unique<RoutedLora>();
    const bool single = rs.experts.size() == 1 && rs.experts.count(-1) && !rs.router;
    const bool plain_with_shared_a = c.family == AdapterConfig::Family::kPeft && rs.shared_a &&
                                     rs.experts.count(-1) && !rs.router;
    if (single || plain_with_shared_a) {
      RawLora pair = rs.experts[-1];
      if (plain_with_shared_a) pair.a = rs.shared_a;
      out->spec.routing = Routing::kSingle;
      HostLora host;
      SY_ASSIGN_OR_RETURN(LoraPair p, b.Pair(pair, d.in, d.out, c.r, scale, label, &host));
      diagnose_site(layer, std::string(LinearSiteName(site)), {&host, 1}, Tensor());
      out->experts.push_back(std::move(p));
      adapter->layers[layer].sites[static_cast<int>(site)] = std::move(out);
      continue;
    }
    if (!rs.router) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter weights: ", label, " has experts but no router"));
    }
    if (rs.experts.count(-1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter weights: ", label, " mixes routed experts with a plain LoRA"));
    }
    const int E = static_cast<int>(rs.experts.size());
    if (E == 0 || rs.experts.rbegin()->first != E - 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter weights: ", label, " has experts missing from 0..", E - 1));
    }
    out->spec = c.router;
    out->spec.num_experts = E;
    if (c.family == AdapterConfig::Family::kPeft) {
      if (c.lora_nums != E) {
        return absl::InvalidArgumentError(absl::StrCat("adapter weights: ", label, " has ", E,
                                                       " experts but lora_nums is ", c.lora_nums));
      }
      if (rs.shared_a) {
        family = "hydralora";
        out->shared_a = true;
      } else {
        family = "loramoe";
      }
    } else if (c.family != AdapterConfig::Family::kMola && E != c.router.num_experts) {
      return absl::InvalidArgumentError(absl::StrCat(
          "adapter weights: ", label, " has ", E, " experts, config says ", c.router.num_experts));
    }
    if (!c.top_k_per_layer.empty()) {
      if (layer >= static_cast<int>(c.top_k_per_layer.size())) {
        return absl::InvalidArgumentError(
            absl::StrCat(kWhere, ": top_k lists ", c.top_k_per_layer.size(),
                         " layers, the base model has ", m.num_layers));
      }
      out->spec.top_k = c.top_k_per_layer[layer];
    }
    if (out->spec.routing != Routing::kDense && out->spec.top_k > E) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": top_k ", out->spec.top_k, " exceeds its ", E, " experts"));
    }
    const int h = c.heads;
    if (d.in % h != 0 || d.out % h != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": num_heads ", h, " does not divide ", d.in, " -> ", d.out));
    }
    out->heads = h;
    Tensor router_host;
    SY_ASSIGN_OR_RETURN(out->router,
                        b.Router(*rs.router, E, d.in / h, label + " router", &router_host));
    std::vector<HostLora> host(rs.experts.size());
    for (auto& [e, pair] : rs.experts) {
      RawLora p = pair;
      if (out->shared_a) {
        if (p.a) {
          return absl::InvalidArgumentError(
              absl::StrCat(label, ": HydraLoRA expert ", e, " has its own lora_A"));
        }
        p.a = rs.shared_a;
      }
      SY_ASSIGN_OR_RETURN(LoraPair lp, b.Pair(p, d.in / h, d.out / h, c.r, scale,
                                              absl::StrCat(label, " expert ", e), &host[e]));
      out->experts.push_back(std::move(lp));
    }
    diagnose_site(layer, std::string(LinearSiteName(site)), host, router_host);
    if (c.family == AdapterConfig::Family::kMhMoeLora) {
      if (c.head_rank > 0) {
        SY_ASSIGN_OR_RETURN(out->head, b.Pair(rs.head, d.in, d.in, c.head_rank,
                                              AdapterConfig::Scale(c.alpha, c.head_rank, c.rslora),
                                              label + " head"));
      } else if (rs.head.a || rs.head.b) {
        return absl::InvalidArgumentError(label + ": head weights present but head_rank is 0");
      }
      if (c.merge_rank > 0) {
        SY_ASSIGN_OR_RETURN(
            out->merge,
            b.Pair(rs.merge, d.out, d.out, c.merge_rank,
                   AdapterConfig::Scale(c.alpha, c.merge_rank, c.rslora), label + " merge"));
      } else if (rs.merge.a || rs.merge.b) {
        return absl::InvalidArgumentError(label + ": merge weights present but merge_rank is 0");
      }
    }
    adapter->layers[layer].sites[static_cast<int>(site)] = std::move(out);
  }
  if (raw.mix.empty() && raw.sites.empty()) {
    return absl::InvalidArgumentError("adapter weights hold no LoRA tensors");
  }
  // One allocation for the whole adapter: its matrices are read together, step after step.
  std::vector<Weight*> all;
  const auto add_pair = [&](LoraPair& p) {
    if (p.rank > 0) {
      all.push_back(&p.a);
      all.push_back(&p.b);
    }
  };
  for (AdapterLayer& layer : adapter->layers) {
    if (layer.ffn) {
      all.push_back(&layer.ffn->router);
      for (MixLoraExpert& e : layer.ffn->experts) {
        for (LoraPair& p : e.lora) add_pair(p);
      }
    }
    for (auto& site : layer.sites) {
      if (!site) continue;
      if (site->router.defined()) all.push_back(&site->router);
      // HydraLoRA experts share one A: consolidate it once.
      for (size_t e = 0; e < site->experts.size(); ++e) {
        if (site->shared_a && e > 0) {
          all.push_back(&site->experts[e].b);
        } else {
          add_pair(site->experts[e]);
        }
      }
      add_pair(site->head);
      add_pair(site->merge);
    }
  }
  SY_RETURN_IF_ERROR(backend.Consolidate(all));
  for (AdapterLayer& layer : adapter->layers) {
    for (auto& site : layer.sites) {
      if (site && site->shared_a) {
        for (auto& e : site->experts) e.a = site->experts[0].a;
      }
    }
  }
  // Within a layer: the MixLoRA block's projections, then the linears in site order.
  std::stable_sort(
      diagnostics->sites.begin(), diagnostics->sites.end(),
      [](const SiteDiagnostics& x, const SiteDiagnostics& y) { return x.layer < y.layer; });
  if (diagnose) adapter->diagnostics = std::move(diagnostics);
  adapter->family = family;
  adapter->bytes = b.bytes();
  return adapter;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AdapterFiles>> ReadAdapterFiles(const ConfinedDir& dir) {
  try {
    return ReadAdapterFilesUnguarded(dir);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat(dir.path(), ": out of memory while reading the adapter"));
  }
}

absl::StatusOr<std::unique_ptr<AdapterWeights>> BuildAdapter(const AdapterFiles& files,
                                                             const ModelConfig& m, Backend& backend,
                                                             DType lora_dtype, bool diagnose) {
  try {
    return BuildAdapterUnguarded(files, m, backend, lora_dtype, diagnose);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of memory while preparing the adapter's weights");
  }
}

absl::StatusOr<std::unique_ptr<AdapterWeights>> LoadAdapter(const std::string& dir,
                                                            const ModelConfig& m, Backend& backend,
                                                            DType lora_dtype) {
  absl::StatusOr<ConfinedDir> confined = ConfinedDir::Open(dir);
  if (!confined.ok()) return absl::NotFoundError(absl::StrCat("cannot open ", dir));
  return LoadAdapter(*confined, m, backend, lora_dtype);
}

absl::StatusOr<std::unique_ptr<AdapterWeights>> LoadAdapter(const ConfinedDir& dir,
                                                            const ModelConfig& m, Backend& backend,
                                                            DType lora_dtype) {
  SY_ASSIGN_OR_RETURN(std::unique_ptr<AdapterFiles> files, ReadAdapterFiles(dir));
  return BuildAdapter(*files, m, backend, lora_dtype);
}

}  // namespace switchyard
