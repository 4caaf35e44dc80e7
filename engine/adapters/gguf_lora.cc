#include "engine/adapters/gguf_lora.h"

#include <cmath>
#include <map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/core/status_macros.h"
#include "engine/model/gguf.h"

namespace switchyard {
namespace {

// llama.cpp's per-layer tensor names -> PEFT's module paths.
const std::map<std::string, std::string>& ModulePaths() {
  static const auto* paths = new std::map<std::string, std::string>{
      {"attn_q", "self_attn.q_proj"}, {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"}, {"attn_output", "self_attn.o_proj"},
      {"ffn_gate", "mlp.gate_proj"},  {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"}};
  return *paths;
}

// "blk.L.attn_q.weight.lora_a" -> ("base_model.model.model.layers.L.self_attn.q_proj.lora_A
// .weight", module), or an error naming the tensor.
absl::StatusOr<std::pair<std::string, std::string>> PeftName(const std::string& name,
                                                             const std::string& path) {
  const std::vector<std::string> p = absl::StrSplit(name, '.');
  int layer = -1;
  const auto it = p.size() == 5 ? ModulePaths().find(p[2]) : ModulePaths().end();
  if (p.size() != 5 || p[0] != "blk" || !absl::SimpleAtoi(p[1], &layer) || layer < 0 ||
      layer >= (1 << 20) || it == ModulePaths().end() || p[3] != "weight" ||
      (p[4] != "lora_a" && p[4] != "lora_b")) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": tensor \"", name,
        "\" is not a LoRA factor of a projection (blk.N.{attn_q,attn_k,attn_v,attn_output,"
        "ffn_gate,ffn_up,ffn_down}.weight.lora_{a,b})"));
  }
  return std::make_pair(absl::StrCat("base_model.model.model.layers.", layer, ".", it->second,
                                     p[4] == "lora_a" ? ".lora_A" : ".lora_B", ".weight"),
                        it->second.substr(it->second.find('.') + 1));
}

// The tensor as F32/F16/BF16 (dense types as stored; quantized ones dequantized, which is exact).
absl::StatusOr<Tensor> Factor(const GgufFile& file, const GgufTensor& t) {
  SY_ASSIGN_OR_RETURN(Tensor data, file.Data(t));
  if (t.shape.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.path(), ": LoRA factor \"", t.name, "\" is not a matrix"));
  }
  if (t.type.dense.has_value()) return data;
  const int64_t rows = t.shape[0], cols = t.shape[1];
  SY_ASSIGN_OR_RETURN(Tensor out, Tensor::TryEmpty(DType::kF32, {rows, cols}));
  const size_t row_bytes = QuantRowBytes(t.type.quant, cols);
  for (int64_t r = 0; r < rows; ++r) {
    DequantizeRow(t.type.quant, data.data<uint8_t>() + r * row_bytes, out.data<float>() + r * cols,
                  cols);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AdapterFiles>> ReadGgufLora(std::string bytes,
                                                           const std::string& path) {
  SY_ASSIGN_OR_RETURN(std::shared_ptr<const GgufFile> file,
                      GgufFile::FromBytes(std::move(bytes), path));
  const auto expect = [&](absl::string_view key, absl::string_view want) -> absl::Status {
    SY_ASSIGN_OR_RETURN(std::string value, file->GetString(key));
    if (value != want) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ", key, " is \"", value, "\"; a LoRA adapter has \"", want, "\""));
    }
    return absl::OkStatus();
  };
  SY_RETURN_IF_ERROR(expect("general.type", "adapter"));
  SY_RETURN_IF_ERROR(expect("adapter.type", "lora"));
  auto files = std::make_unique<AdapterFiles>();
  SY_ASSIGN_OR_RETURN(files->gguf_architecture, file->GetString("general.architecture"));
  AdapterConfig& c = files->config;
  c.family = AdapterConfig::Family::kPeft;
  for (const GgufTensor& t : file->tensors()) {
    SY_ASSIGN_OR_RETURN(auto names, PeftName(t.name, path));
    SY_ASSIGN_OR_RETURN(Tensor factor, Factor(*file, t));
    // One rank for the whole adapter, as AdapterConfig holds it (llama.cpp's converter writes
    // PEFT's single `r`).
    const int64_t rank = absl::EndsWith(t.name, "lora_a") ? factor.dim(0) : factor.dim(1);
    if (rank <= 0 || rank > (1 << 16) || (c.r != 0 && rank != c.r)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": \"", t.name, "\" has rank ", rank,
                       c.r != 0 ? absl::StrCat(", others ", c.r) : std::string()));
    }
    c.r = static_cast<int>(rank);
    c.targets.insert(names.second);
    files->bytes += factor.nbytes();
    files->tensors.push_back({std::move(names.first), std::move(factor)});
  }
  if (files->tensors.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the adapter has no tensors"));
  }
  // llama.cpp scales by alpha / r, or by 1 when alpha is 0 or absent.
  const GgufValue* alpha = file->Find("adapter.lora.alpha");
  const double a = alpha != nullptr && alpha->type == GgufType::kF32 ? alpha->number : 0.0;
  if (!std::isfinite(a)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": adapter.lora.alpha is not finite"));
  }
  c.alpha = a != 0.0 ? a : c.r;
  files->format = "gguf";
  return files;
}

}  // namespace switchyard
