// Dequantizes every tensor of a GGUF file with our reader, for tests/reference/test_gguf.py to
// compare with its independent numpy dequantizer: for each tensor, in file order, the reference
// dequantizer's F32 values and the CPU kernels' (dense tensors: converted to F32), written to
// OUT_DIR/<name>.ref.f32 and OUT_DIR/<name>.fast.f32.
//
//   gguf_driver FILE.gguf OUT_DIR

#include <cstdio>
#include <string>
#include <vector>

#include "engine/backends/cpu/quant_kernels.h"
#include "engine/model/gguf.h"

namespace switchyard {
namespace {

bool Write(const std::string& path, const std::vector<float>& v) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  const bool ok = std::fwrite(v.data(), 4, v.size(), f) == v.size();
  return std::fclose(f) == 0 && ok;
}

int Main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: gguf_driver FILE.gguf OUT_DIR\n");
    return 2;
  }
  auto file = GgufFile::Open(argv[1]);
  if (!file.ok()) {
    std::fprintf(stderr, "%s\n", file.status().ToString().c_str());
    return 1;
  }
  for (const GgufTensor& t : (*file)->tensors()) {
    auto data = (*file)->Data(t);
    if (!data.ok()) return 1;
    const int64_t cols = t.shape.back(), n = NumElements(t.shape), rows = n / cols;
    std::vector<float> ref(n), fast(n);
    if (t.type.dense.has_value()) {
      ConvertToF32(*t.type.dense, data->raw(), ref.data(), n);
      fast = ref;
    } else {
      const size_t row_bytes = QuantRowBytes(t.type.quant, cols);
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* src = data->data<uint8_t>() + r * row_bytes;
        DequantizeRow(t.type.quant, src, &ref[r * cols], cols);
        cpu::DequantizeRowFast(t.type.quant, src, &fast[r * cols], cols);
      }
    }
    const std::string base = std::string(argv[2]) + "/" + t.name;
    if (!Write(base + ".ref.f32", ref) || !Write(base + ".fast.f32", fast)) return 1;
  }
  return 0;
}

}  // namespace
}  // namespace switchyard

int main(int argc, char** argv) { return switchyard::Main(argc, argv); }
