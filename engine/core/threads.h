// The compute thread count: SWITCHYARD_THREADS caps it (default: all cores). Compute kernels and
// oneDNN share one OpenMP pool of this size, driven by the single engine thread.
#pragma once

namespace switchyard {

// Reads SWITCHYARD_THREADS once and configures the OpenMP pool; later calls return the same value.
int ComputeThreads();

// Lowers the calling thread's scheduling priority (nice 19): background work such as adapter
// loading then takes only the cycles the engine's compute threads leave.
void LowerThreadPriority();

}  // namespace switchyard
