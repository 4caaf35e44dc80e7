// Fuzzes the GGUF reader and what a GGUF model is translated into: any bytes are either refused
// with a Status or give tensors whose every byte lies inside the file, a config that validates,
// and tokenizer files our tokenizer parses or refuses.
#include <cstdint>
#include <string>

#include "engine/model/gguf.h"
#include "engine/model/gguf_model.h"
#include "engine/tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
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
