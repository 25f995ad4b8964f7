#include "careg/info.h"

#include <thread>

#ifndef CAREG_BUILD_FLAGS
#define CAREG_BUILD_FLAGS ""
#endif

namespace careg {

std::string build_flags() { return std::string(CAREG_BUILD_FLAGS); }

int default_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

}  // namespace careg
