#include "careg/sqdist.h"

namespace careg {

void pairwise_sqdist(const float* a, std::size_t n, const float* b, std::size_t m,
                     std::size_t d, float* out) {
  for (std::size_t i = 0; i < n; ++i) {
    const float* ai = a + i * d;
    for (std::size_t j = 0; j < m; ++j) {
      const float* bj = b + j * d;
      float acc = 0.f;
      for (std::size_t k = 0; k < d; ++k) {
        float t = ai[k] - bj[k];
        acc += t * t;
      }
      out[i * m + j] = acc;
    }
  }
}

}  // namespace careg
