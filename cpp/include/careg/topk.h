// A k-slot ascending list: the per-query state of every kNN kernel.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace careg {

struct TopK {
  float* d;
  std::int64_t* i;
  std::size_t k;

  void reset() {
    for (std::size_t r = 0; r < k; ++r) {
      d[r] = std::numeric_limits<float>::infinity();
      i[r] = -1;
    }
  }
  float worst() const { return d[k - 1]; }
  // Strict < : equal distances keep the earlier (lower) index; NaN never enters.
  void push(float dist, std::int64_t id) {
    if (!(dist < d[k - 1])) return;
    std::size_t r = k - 1;
    while (r > 0 && dist < d[r - 1]) {
      d[r] = d[r - 1];
      i[r] = i[r - 1];
      --r;
    }
    d[r] = dist;
    i[r] = id;
  }
};

// sum((a - b)^2) in float with a vectorisable loop.
inline float exact_sqdist(const float* a, const float* b, std::size_t D) {
  float s = 0.f;
  for (std::size_t j = 0; j < D; ++j) {
    float t = a[j] - b[j];
    s += t * t;
  }
  return s;
}

inline bool all_finite(const float* a, std::size_t n) {
  float s = 0.f;
  for (std::size_t j = 0; j < n; ++j) s += a[j] * 0.f;  // NaN iff some entry is inf/nan
  return s == 0.f;
}

}  // namespace careg
