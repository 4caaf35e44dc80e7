// The benchmarks' model arguments: a folder or a .gguf file, optionally FOLDER@int8 / FOLDER@int4
// to quantize at load, and @act=f32 / @act=int8 for the activations of quantized products
// (--quantized_activations), and @kv=f32|bf16|f16 for the KV cache, e.g. FOLDER@int8@act=f32 or
// FILE.gguf@act=f32@kv=f32.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "engine/core/status_macros.h"
#include "engine/engine.h"

namespace switchyard::bench {

inline absl::Status ApplyModelSpec(const std::string& spec, EngineOptions* options) {
  const std::vector<std::string> parts = absl::StrSplit(spec, '@');
  options->model_dir = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) {
    if (absl::StartsWith(parts[i], "kv=")) {
      SY_ASSIGN_OR_RETURN(options->kv_cache_dtype, ParseKvCacheDType(parts[i].substr(3)));
    } else if (absl::StartsWith(parts[i], "act=")) {
      SY_ASSIGN_OR_RETURN(options->quant_activations, ParseQuantActivations(parts[i].substr(4)));
    } else {
      SY_ASSIGN_OR_RETURN(options->quantization, ParseQuantization(parts[i]));
    }
  }
  return absl::OkStatus();
}

}  // namespace switchyard::bench
