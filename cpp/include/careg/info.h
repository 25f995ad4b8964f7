// Build information of the compiled core (reported by `careg-edge info`).
#pragma once
#include <string>

namespace careg {
std::string build_flags();
int default_threads();
}  // namespace careg
