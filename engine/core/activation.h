// Activation functions of the FFN (and of MixLoRA experts, which may override the base model's).
#pragma once

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard {

enum class Activation { kSilu, kGeluErf, kGeluTanh, kRelu };

// Hugging Face ACT2FN names: "silu"/"swish", "gelu", "gelu_pytorch_tanh"/"gelu_new", "relu".
absl::StatusOr<Activation> ParseActivation(absl::string_view name);
absl::string_view ActivationName(Activation a);

}  // namespace switchyard
