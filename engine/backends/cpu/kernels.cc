#include "engine/backends/cpu/kernels.h"

#include <cstdlib>
#include <cstring>

namespace switchyard::cpu {

const KernelTable& Kernels() {
  static const KernelTable* table = [] {
    const char* force = std::getenv("SWITCHYARD_ISA");  // "avx2" pins the baseline (testing)
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    if (avx512 && !(force != nullptr && std::strcmp(force, "avx2") == 0)) return &avx512::Table();
    return &avx2::Table();
  }();
  return *table;
}

}  // namespace switchyard::cpu
