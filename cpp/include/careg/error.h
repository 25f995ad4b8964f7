// careg::Error and the one check macro every entry point uses.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace careg {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace careg

// CAREG_CHECK(cond, what): throws careg::Error naming the failed condition and
// the caller's context (tensor name, file) so a user sees which input is wrong.
#define CAREG_CHECK(cond, what)                                           \
  do {                                                                    \
    if (!(cond)) {                                                        \
      std::ostringstream careg_os_;                                       \
      careg_os_ << what << " (check failed: " #cond ")";                  \
      throw ::careg::Error(careg_os_.str());                              \
    }                                                                     \
  } while (0)
