// Plain LoRA adapters in GGUF, as llama.cpp's LoRA converter (convert_lora_to_gguf.py) writes
// them: general.type "adapter", adapter.type "lora", adapter.lora.alpha, general.architecture of
// the base, and per adapted matrix `<base tensor>.lora_a` [r, in] and `.lora_b` [out, r] in F32,
// F16, BF16 or Q8_0. Read into the AdapterFiles a PEFT folder would give (peft_type LORA, the
// tensors under PEFT's names, quantized factors dequantized exactly), so one builder serves both.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/adapters/loader.h"

namespace switchyard {

// The file name an adapter folder holds a GGUF LoRA under (in place of adapter_config.json and
// the weights).
inline constexpr char kGgufLoraFile[] = "adapter_model.gguf";

// `bytes` is the file's content; `path` names it in errors.
absl::StatusOr<std::unique_ptr<AdapterFiles>> ReadGgufLora(std::string bytes,
                                                           const std::string& path);

}  // namespace switchyard
