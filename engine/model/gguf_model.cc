#include "engine/model/gguf_model.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "nlohmann/json.hpp"

namespace switchyard {
namespace {

using nlohmann::json;

constexpr absl::string_view kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr absl::string_view kQwen2Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr absl::string_view kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// Token types of tokenizer.ggml.token_type.
constexpr int kTokenUnknown = 2;
constexpr int kTokenControl = 3;
constexpr int kTokenUserDefined = 4;

absl::StatusOr<std::string> GgufArchitecture(const GgufFile& f) {
  SY_ASSIGN_OR_RETURN(std::string arch, f.GetString("general.architecture"));
  if (arch != "llama" && arch != "qwen2") {
    return absl::UnimplementedError(absl::StrCat(f.path(), ": architecture \"", arch,
                                                 "\" is not supported (supported: llama, qwen2)"));
  }
  return arch;
}

int64_t IntOr(const GgufFile& f, const std::string& key, int64_t fallback) {
  absl::StatusOr<int64_t> v = f.GetInt(key);
  return v.ok() ? *v : fallback;
}

}  // namespace

bool IsGgufPath(const std::string& path) { return absl::EndsWith(path, ".gguf"); }

absl::StatusOr<std::string> GgufConfigJson(const GgufFile& f) {
  SY_ASSIGN_OR_RETURN(const std::string arch, GgufArchitecture(f));
  const std::string p = arch + ".";
  json c;
  c["architectures"] = json::array({arch == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"});
  c["model_type"] = arch;
  SY_ASSIGN_OR_RETURN(const int64_t hidden, f.GetInt(p + "embedding_length"));
  SY_ASSIGN_OR_RETURN(const int64_t ffn, f.GetInt(p + "feed_forward_length"));
  SY_ASSIGN_OR_RETURN(const int64_t layers, f.GetInt(p + "block_count"));
  SY_ASSIGN_OR_RETURN(const int64_t heads, f.GetInt(p + "attention.head_count"));
  SY_ASSIGN_OR_RETURN(const double eps, f.GetNumber(p + "attention.layer_norm_rms_epsilon"));
  c["hidden_size"] = hidden;
  c["intermediate_size"] = ffn;
  c["num_hidden_layers"] = layers;
  c["rms_norm_eps"] = eps;
  c["num_attention_heads"] = heads;
  c["num_key_value_heads"] = IntOr(f, p + "attention.head_count_kv", heads);
  const int64_t head_dim = IntOr(f, p + "attention.key_length", heads > 0 ? hidden / heads : 0);
  c["head_dim"] = head_dim;
  if (IntOr(f, p + "attention.value_length", head_dim) != head_dim ||
      IntOr(f, p + "rope.dimension_count", head_dim) != head_dim) {
    return absl::UnimplementedError(absl::StrCat(
        f.path(), ": value heads or a rotary dimension unlike the key heads are not supported"));
  }
  c["max_position_embeddings"] = IntOr(f, p + "context_length", 4096);
  absl::StatusOr<double> theta = f.GetNumber(p + "rope.freq_base");
  c["rope_theta"] = theta.ok() ? *theta : 10000.0;
  absl::StatusOr<std::string> scaling = f.GetString(p + "rope.scaling.type");
  if (scaling.ok() && *scaling == "linear") {
    SY_ASSIGN_OR_RETURN(const double factor, f.GetNumber(p + "rope.scaling.factor"));
    c["rope_scaling"] = {{"type", "linear"}, {"factor", factor}};
  } else if (scaling.ok() && *scaling != "none") {
    return absl::UnimplementedError(
        absl::StrCat(f.path(), ": RoPE scaling \"", *scaling, "\" is not supported"));
  }
  const GgufTensor* embed = f.FindTensor("token_embd.weight");
  if (embed == nullptr || embed->shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(f.path(), ": no 2-D token_embd.weight"));
  }
  c["vocab_size"] = IntOr(f, p + "vocab_size", embed->shape[0]);
  c["tie_word_embeddings"] = f.FindTensor("output.weight") == nullptr;
  if (arch == "llama") c["attention_bias"] = f.FindTensor("blk.0.attn_q.bias") != nullptr;
  c["hidden_act"] = "silu";
  if (absl::StatusOr<int64_t> bos = f.GetInt("tokenizer.ggml.bos_token_id"); bos.ok()) {
    c["bos_token_id"] = *bos;
  }
  if (absl::StatusOr<int64_t> eos = f.GetInt("tokenizer.ggml.eos_token_id"); eos.ok()) {
    c["eos_token_id"] = json::array({*eos});
  }
  return c.dump();
}

absl::StatusOr<ModelConfig> GgufModelConfig(const GgufFile& file) {
  SY_ASSIGN_OR_RETURN(const std::string text, GgufConfigJson(file));
  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(text);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(file.path(), ": ", config.status().message()));
  }
  if (const GgufTensor* freqs = file.FindTensor("rope_freqs.weight"); freqs != nullptr) {
    // Llama 3.1-style RoPE scaling, stored as the per-frequency divisors llama.cpp applies.
    if (freqs->shape.size() != 1 || freqs->shape[0] != config->head_dim / 2 ||
        freqs->type.dense != DType::kF32) {
      return absl::InvalidArgumentError(
          absl::StrCat(file.path(), ": rope_freqs.weight must be F32 [head_dim / 2]"));
    }
    SY_ASSIGN_OR_RETURN(Tensor t, file.Data(*freqs));
    config->rope_freq_factors.assign(t.data<float>(), t.data<float>() + t.numel());
  }
  return config;
}

namespace {

class GgufSource : public WeightSource {
 public:
  GgufSource(std::shared_ptr<const GgufFile> file, const ModelConfig& config)
      : file_(std::move(file)), config_(config) {}

  bool Contains(const std::string& name) const override {
    return file_->FindTensor(GgufName(name)) != nullptr;
  }

  absl::StatusOr<HostMatrix> Matrix(const std::string& name, int64_t rows,
                                    int64_t cols) const override {
    SY_ASSIGN_OR_RETURN(const GgufTensor* t, Find(name, {rows, cols}));
    SY_ASSIGN_OR_RETURN(Tensor data, file_->Data(*t));
    HostMatrix m{data, t->type.quant, rows, cols};
    if (const int heads = RopeHeads(name); heads > 0) {
      SY_ASSIGN_OR_RETURN(m.data, UnpermuteRopeRows(data, heads));
    }
    return m;
  }

  absl::StatusOr<Tensor> Vector(const std::string& name, int64_t n) const override {
    SY_ASSIGN_OR_RETURN(const GgufTensor* t, Find(name, {n}));
    if (!t->type.dense.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", t->name, "\" is quantized"));
    }
    SY_ASSIGN_OR_RETURN(Tensor data, file_->Data(*t));
    Tensor out = Tensor::Empty(DType::kF32, {n});
    ConvertToF32(data.dtype(), data.raw(), out.data<float>(), static_cast<size_t>(n));
    if (const int heads = RopeHeads(name); heads > 0) {
      SY_ASSIGN_OR_RETURN(out, UnpermuteRopeRows(out.Reshaped({n, 1}), heads));
      out = out.Reshaped({n});
    }
    return out;
  }

 private:
  static std::string GgufName(const std::string& hf) {
    static const auto* kTop = new absl::flat_hash_map<std::string, std::string>{
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"}};
    static const auto* kLayer = new absl::flat_hash_map<std::string, std::string>{
        {"input_layernorm.weight", "attn_norm.weight"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"self_attn.q_proj.bias", "attn_q.bias"},
        {"self_attn.k_proj.bias", "attn_k.bias"},
        {"self_attn.v_proj.bias", "attn_v.bias"},
        {"self_attn.o_proj.bias", "attn_output.bias"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
        {"mlp.gate_proj.bias", "ffn_gate.bias"},
        {"mlp.up_proj.bias", "ffn_up.bias"},
        {"mlp.down_proj.bias", "ffn_down.bias"}};
    if (auto it = kTop->find(hf); it != kTop->end()) return it->second;
    constexpr absl::string_view kPrefix = "model.layers.";
    if (absl::StartsWith(hf, kPrefix)) {
      const size_t dot = hf.find('.', kPrefix.size());
      if (dot != std::string::npos) {
        auto it = kLayer->find(hf.substr(dot + 1));
        if (it != kLayer->end()) {
          return absl::StrCat("blk.", hf.substr(kPrefix.size(), dot - kPrefix.size()), ".",
                              it->second);
        }
      }
    }
    return hf;
  }

  absl::StatusOr<const GgufTensor*> Find(const std::string& hf, const Shape& expected) const {
    const std::string name = GgufName(hf);
    const GgufTensor* t = file_->FindTensor(name);
    if (t == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(file_->path(), ": missing tensor \"", name, "\" (", hf, ")"));
    }
    if (t->shape != expected) {
      return absl::InvalidArgumentError(absl::StrCat(file_->path(), ": tensor \"", name,
                                                     "\" has shape ", ShapeString(t->shape),
                                                     ", expected ", ShapeString(expected)));
    }
    return t;
  }

  // Heads whose rows the converter permuted (llama architecture q and k), or 0.
  int RopeHeads(const std::string& hf) const {
    if (config_.architecture == Architecture::kQwen2) return 0;
    if (absl::StrContains(hf, "self_attn.q_proj.")) return static_cast<int>(config_.num_heads);
    if (absl::StrContains(hf, "self_attn.k_proj.")) return static_cast<int>(config_.num_kv_heads);
    return 0;
  }

  std::shared_ptr<const GgufFile> file_;
  const ModelConfig& config_;
};

}  // namespace

absl::StatusOr<Tensor> UnpermuteRopeRows(const Tensor& rows, int heads) {
  const int64_t n = rows.dim(0), half = n / heads / 2;
  if (n % (2 * heads) != 0) return absl::InvalidArgumentError("q/k rows do not split into heads");
  SY_ASSIGN_OR_RETURN(Tensor out, Tensor::TryEmpty(rows.dtype(), rows.shape()));
  const size_t row_bytes = rows.nbytes() / static_cast<size_t>(n);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t src = h * 2 * half + 2 * i + j, dst = h * 2 * half + j * half + i;
        std::memcpy(out.data<char>() + dst * row_bytes, rows.data<char>() + src * row_bytes,
                    row_bytes);
      }
    }
  }
  return out;
}

namespace {

json AddedToken(int32_t id, const std::string& content, bool special) {
  return {{"id", id},        {"content", content},     {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", !special}, {"special", special}};
}

json BosTemplate(const std::string& bos, int32_t bos_id) {
  return {{"type", "TemplateProcessing"},
          {"single", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                                  {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
          {"pair", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
                                {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
          {"special_tokens", {{bos, {{"id", bos}, {"ids", {bos_id}}, {"tokens", {bos}}}}}}};
}

constexpr size_t kMaxMergedPieceBytes = 256;

// SentencePiece BPE keeps scores, not merges: every split of a piece into two pieces is a merge,
// ranked by the piece's score (ties by id), then by the ids of the halves, as Hugging Face's
// SentencePieceExtractor ranks them.
json MergesFromScores(const std::vector<std::string>& tokens, const std::vector<double>& scores,
                      const absl::flat_hash_map<std::string, int32_t>& vocab) {
  std::vector<int32_t> order(tokens.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return scores[a] > scores[b]; });
  json merges = json::array();
  std::vector<std::pair<int32_t, int32_t>> local;
  for (int32_t id : order) {
    const std::string& piece = tokens[id];
    // Splitting a piece costs its length squared; SentencePiece pieces are at most 16 characters
    // by default, so longer ones (a crafted file's megabyte token) take part in no merge.
    if (piece.size() > kMaxMergedPieceBytes) continue;
    local.clear();
    for (size_t i = 1; i < piece.size(); ++i) {
      auto l = vocab.find(piece.substr(0, i));
      auto r = vocab.find(piece.substr(i));
      if (l != vocab.end() && r != vocab.end()) local.emplace_back(l->second, r->second);
    }
    std::sort(local.begin(), local.end());
    for (const auto& [l, r] : local) merges.push_back(json::array({tokens[l], tokens[r]}));
  }
  return merges;
}

}  // namespace

std::unique_ptr<WeightSource> GgufWeights(std::shared_ptr<const GgufFile> file,
                                          const ModelConfig& config) {
  return std::make_unique<GgufSource>(std::move(file), config);
}

absl::StatusOr<TokenizerFiles> GgufTokenizerFiles(const GgufFile& f) {
  SY_ASSIGN_OR_RETURN(const std::string model, f.GetString("tokenizer.ggml.model"));
  const GgufValue* tokens_value = f.Find("tokenizer.ggml.tokens");
  if (tokens_value == nullptr || tokens_value->element_type != GgufType::kString ||
      tokens_value->strings.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(f.path(), ": no tokenizer.ggml.tokens"));
  }
  const std::vector<std::string>& tokens = tokens_value->strings;
  const int32_t n = static_cast<int32_t>(tokens.size());
  std::vector<int> types(tokens.size(), 1);
  if (const GgufValue* t = f.Find("tokenizer.ggml.token_type"); t != nullptr) {
    if (t->numbers.size() != tokens.size()) {
      return absl::InvalidArgumentError(absl::StrCat(f.path(), ": tokenizer.ggml.token_type has ",
                                                     t->numbers.size(), " entries for ", n,
                                                     " tokens"));
    }
    for (size_t i = 0; i < types.size(); ++i) types[i] = static_cast<int>(t->numbers[i]);
  }
  absl::flat_hash_map<std::string, int32_t> vocab;
  json vocab_json = json::object();
  json added = json::array();
  for (int32_t i = 0; i < n; ++i) {
    if (!vocab.try_emplace(tokens[i], i).second) continue;  // the first id of a duplicate wins
    vocab_json[tokens[i]] = i;
    if (types[i] == kTokenControl || types[i] == kTokenUnknown || types[i] == kTokenUserDefined) {
      added.push_back(AddedToken(i, tokens[i], types[i] != kTokenUserDefined));
    }
  }
  const int64_t bos_id = IntOr(f, "tokenizer.ggml.bos_token_id", -1);
  const int64_t eos_id = IntOr(f, "tokenizer.ggml.eos_token_id", -1);
  if (bos_id >= n || eos_id >= n) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(), ": bos/eos id outside the vocabulary"));
  }
  json t;
  json model_json = {{"type", "BPE"},
                     {"dropout", nullptr},
                     {"continuing_subword_prefix", nullptr},
                     {"end_of_word_suffix", nullptr},
                     {"vocab", vocab_json}};
  bool add_bos;
  // Whether decoding removes spaces before punctuation: GGUF does not say; as the Hugging Face
  // releases of these families do (and llama.cpp's pre-type defaults).
  bool clean_up = false;
  if (model == "gpt2") {
    SY_ASSIGN_OR_RETURN(const std::string pre, f.GetString("tokenizer.ggml.pre"));
    absl::string_view pattern;
    if (pre == "llama-bpe" || pre == "llama3" || pre == "smaug-bpe") {
      pattern = kLlama3Pattern;
      model_json["ignore_merges"] = true;
      clean_up = true;
    } else if (pre == "qwen2") {
      pattern = kQwen2Pattern;
      t["normalizer"] = {{"type", "NFC"}};
    } else if (pre == "gpt2" || pre == "default") {
      pattern = kGpt2Pattern;
      clean_up = true;
    } else {
      return absl::UnimplementedError(absl::StrCat(
          f.path(), ": tokenizer.ggml.pre \"", pre,
          "\" is not supported (supported: llama-bpe, llama3, smaug-bpe, qwen2, gpt2, default)"));
    }
    const GgufValue* merges = f.Find("tokenizer.ggml.merges");
    if (merges == nullptr || merges->element_type != GgufType::kString) {
      return absl::InvalidArgumentError(absl::StrCat(f.path(), ": no tokenizer.ggml.merges"));
    }
    model_json["merges"] = merges->strings;
    model_json["byte_fallback"] = false;
    model_json["fuse_unk"] = false;
    model_json["unk_token"] = nullptr;
    t["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers", json::array({{{"type", "Split"},
                                        {"pattern", {{"Regex", std::string(pattern)}}},
                                        {"behavior", "Isolated"},
                                        {"invert", false}},
                                       {{"type", "ByteLevel"},
                                        {"add_prefix_space", false},
                                        {"trim_offsets", true},
                                        {"use_regex", false}}})}};
    t["decoder"] = {{"type", "ByteLevel"},
                    {"add_prefix_space", true},
                    {"trim_offsets", true},
                    {"use_regex", true}};
    add_bos = IntOr(f, "tokenizer.ggml.add_bos_token", pre != "qwen2" ? 1 : 0) != 0;
  } else if (model == "llama") {
    const GgufValue* scores = f.Find("tokenizer.ggml.scores");
    if (scores == nullptr || scores->numbers.size() != tokens.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.path(), ": tokenizer.ggml.scores must hold a score per token"));
    }
    model_json["merges"] = MergesFromScores(tokens, scores->numbers, vocab);
    model_json["byte_fallback"] = true;
    model_json["fuse_unk"] = true;
    model_json["unk_token"] = nullptr;
    for (int32_t i = 0; i < n; ++i) {
      if (types[i] == kTokenUnknown) model_json["unk_token"] = tokens[i];
    }
    t["normalizer"] = {
        {"type", "Sequence"},
        {"normalizers",
         json::array(
             {{{"type", "Prepend"}, {"prepend", "\u2581"}},
              {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}})}};
    t["pre_tokenizer"] = nullptr;
    t["decoder"] = {
        {"type", "Sequence"},
        {"decoders",
         json::array({{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                      {{"type", "ByteFallback"}},
                      {{"type", "Fuse"}},
                      {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}};
    add_bos = IntOr(f, "tokenizer.ggml.add_bos_token", 1) != 0;
  } else {
    return absl::UnimplementedError(absl::StrCat(f.path(), ": tokenizer model \"", model,
                                                 "\" is not supported (supported: gpt2, llama)"));
  }
  t["model"] = std::move(model_json);
  t["added_tokens"] = std::move(added);
  json config = json::object();
  if (add_bos && bos_id >= 0) t["post_processor"] = BosTemplate(tokens[bos_id], bos_id);
  if (bos_id >= 0) config["bos_token"] = tokens[bos_id];
  if (eos_id >= 0) config["eos_token"] = tokens[eos_id];
  config["add_bos_token"] = add_bos;
  config["clean_up_tokenization_spaces"] = clean_up;
  if (absl::StatusOr<std::string> tmpl = f.GetString("tokenizer.chat_template"); tmpl.ok()) {
    config["chat_template"] = *tmpl;
  }
  // Invalid UTF-8 in a token must not throw: replace it, as a JSON encoder must.
  return TokenizerFiles{t.dump(-1, ' ', false, json::error_handler_t::replace),
                        config.dump(-1, ' ', false, json::error_handler_t::replace)};
}

}  // namespace switchyard
