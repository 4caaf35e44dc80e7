// Runs a libFuzzer target without libFuzzer: every file of the corpus folders given, then
// deterministic mutations of them (bit flips, truncations, splices, random bytes). ctest uses it
// as a regression test; `make fuzz` builds the same targets with -fsanitize=fuzzer instead.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv);

int main(int argc, char** argv) {
  LLVMFuzzerInitialize(&argc, &argv);
  std::vector<std::string> inputs;
  for (int i = 1; i < argc; ++i) {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(argv[i], ec)) {
      std::ifstream in(entry.path(), std::ios::binary);
      inputs.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
  }
  inputs.emplace_back();
  const int mutations =
      std::getenv("SWITCHYARD_FUZZ_RUNS") ? std::atoi(std::getenv("SWITCHYARD_FUZZ_RUNS")) : 3000;
  std::mt19937_64 rng(20261123);
  size_t runs = 0;
  for (const std::string& s : inputs) {
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
    ++runs;
  }
  for (int i = 0; i < mutations; ++i) {
    std::string s = inputs[rng() % inputs.size()];
    switch (rng() % 5) {
      case 0:
        for (int k = 0; k < 4 && !s.empty(); ++k)
          s[rng() % s.size()] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1:
        if (!s.empty()) s.resize(rng() % s.size());
        break;
      case 2: {
        const std::string& other = inputs[rng() % inputs.size()];
        if (!other.empty())
          s.insert(s.empty() ? 0 : rng() % s.size(), other.substr(rng() % other.size()));
        break;
      }
      case 3:
        for (int k = 0; k < 8; ++k)
          s.insert(s.empty() ? 0 : rng() % s.size(), 1, static_cast<char>(rng()));
        break;
      default:
        s.assign(rng() % 64, '\0');
        for (char& c : s) c = static_cast<char>(rng());
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
    ++runs;
  }
  std::printf("%zu inputs ran without a crash\n", runs);
  return 0;
}
