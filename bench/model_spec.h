// The benchmarks' model arguments: a folder or a .gguf file, optionally FOLDER@int8 / FOLDER@int4
// to quantize at load.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "engine/core/status_macros.h"
#include "engine/engine.h"

namespace switchyard::bench {

inline absl::Status ApplyModelSpec(const std::string& spec, EngineOptions* options) {
  const std::vector<std::string> parts = absl::StrSplit(spec, '@');
  options->model_dir = parts[0];
  if (parts.size() > 1) {
    SY_ASSIGN_OR_RETURN(options->quantization, ParseQuantization(parts[1]));
  }
  return absl::OkStatus();
}

}  // namespace switchyard::bench
