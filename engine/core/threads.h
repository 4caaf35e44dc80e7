// The compute thread count: SWITCHYARD_THREADS caps it (default: all cores). Compute kernels and
// oneDNN share one OpenMP pool of this size, driven by the single engine thread.
#pragma once

namespace switchyard {

// Reads SWITCHYARD_THREADS once and configures the OpenMP pool; later calls return the same value.
int ComputeThreads();

}  // namespace switchyard
