#include "engine/core/activation.h"

#include "absl/strings/str_cat.h"

namespace switchyard {

absl::StatusOr<Activation> ParseActivation(absl::string_view name) {
  if (name == "silu" || name == "swish") return Activation::kSilu;
  if (name == "gelu") return Activation::kGeluErf;
  if (name == "gelu_pytorch_tanh" || name == "gelu_new" || name == "gelu_fast")
    return Activation::kGeluTanh;
  if (name == "relu") return Activation::kRelu;
  return absl::InvalidArgumentError(absl::StrCat(
      "unsupported activation \"", name, "\" (supported: silu, gelu, gelu_pytorch_tanh, relu)"));
}

absl::string_view ActivationName(Activation a) {
  switch (a) {
    case Activation::kSilu:
      return "silu";
    case Activation::kGeluErf:
      return "gelu";
    case Activation::kGeluTanh:
      return "gelu_pytorch_tanh";
    case Activation::kRelu:
      return "relu";
  }
  return "?";
}

}  // namespace switchyard
