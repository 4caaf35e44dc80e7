// The machine's ceilings, measured in the same run as the figures they scale (the machines here
// share a host: bandwidth swings by 2x from one minute to the next).
#pragma once

#include <cstddef>

namespace switchyard::bench {

// Bytes per second read from a buffer far larger than the caches, by all compute threads.
double MeasureReadBandwidth(size_t bytes = size_t{1} << 30, int repeats = 5);
// F32 FMA FLOP/s of all compute threads (independent chains in registers).
double MeasureF32FmaPeak();
// BF16 dot-product FLOP/s (vdpbf16ps) of all compute threads; 0 when the CPU lacks AVX512_BF16.
double MeasureBf16DotPeak();

}  // namespace switchyard::bench
