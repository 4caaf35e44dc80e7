#include "engine/core/threads.h"

#include <omp.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "absl/strings/numbers.h"
#include "engine/core/log.h"

namespace switchyard {

int ComputeThreads() {
  static const int threads = [] {
    int n = static_cast<int>(std::thread::hardware_concurrency());
    if (n <= 0) n = 1;
    if (const char* env = std::getenv("SWITCHYARD_THREADS"); env != nullptr && *env != '\0') {
      int cap = 0;
      if (absl::SimpleAtoi(env, &cap) && cap > 0) {
        n = std::min(n, cap);
      } else {
        SY_LOG(kWarning, "ignoring SWITCHYARD_THREADS=\"%s\": not a positive integer", env);
      }
    }
    omp_set_num_threads(n);
    return n;
  }();
  return threads;
}

void LowerThreadPriority() {
  // On Linux a thread id names the thread for setpriority; failure only costs priority.
  setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 19);
}

}  // namespace switchyard
