// Fuzzes the GGUF reader and what a GGUF file is translated into: any bytes are either refused
// with a Status or give tensors whose every byte lies inside the file, a config that validates,
// tokenizer files our tokenizer parses or refuses, and (as a LoRA adapter) adapter files whose
// factors are matrices of the rank they claim.
#include <cstdint>
#include <string>

#include "engine/adapters/gguf_lora.h"
#include "engine/model/gguf.h"
#include "engine/model/gguf_model.h"
#include "engine/tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  auto lora = switchyard::ReadGgufLora(bytes, "fuzz.gguf");
  if (lora.ok()) {
    for (const auto& nt : (*lora)->tensors) {
      const bool a = nt.name.find(".lora_A.") != std::string::npos;
      if (nt.tensor.shape().size() != 2 || nt.tensor.dim(a ? 0 : 1) != (*lora)->config.r) {
        __builtin_trap();
      }
    }
  }
  auto file = switchyard::GgufFile::FromBytes(bytes, "fuzz.gguf");
  if (!file.ok()) return 0;
  for (const auto& t : (*file)->tensors()) {
    auto view = (*file)->Data(t);
    if (!view.ok() || view->nbytes() == 0) continue;
    // Touch the first and last byte: ASan catches a view outside the file.
    volatile char first = view->data<char>()[0];
    volatile char last = view->data<char>()[view->nbytes() - 1];
    (void)first;
    (void)last;
  }
  (void)switchyard::GgufModelConfig(**file);
  auto tokenizer = switchyard::GgufTokenizerFiles(**file);
  if (tokenizer.ok()) {
    (void)switchyard::Tokenizer::FromJson(tokenizer->tokenizer_json,
                                          tokenizer->tokenizer_config_json);
  }
  return 0;
}
