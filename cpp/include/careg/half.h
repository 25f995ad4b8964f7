// IEEE binary16 -> binary32 conversion for fp16-stored precision factors.
#pragma once
#include <cstddef>
#include <cstdint>

namespace careg {

float half_to_float(std::uint16_t h);
// Converts n values; uses F16C when the build enables it.
void half_to_float_row(const std::uint16_t* src, float* dst, std::size_t n);

}  // namespace careg
