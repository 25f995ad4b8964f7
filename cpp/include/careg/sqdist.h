// Squared Euclidean distances between two row sets (the kNN building block).
#pragma once
#include <cstddef>

namespace careg {

// out[i*m + j] = ||a_i - b_j||^2 for a [n, d], b [m, d]; never negative.
void pairwise_sqdist(const float* a, std::size_t n, const float* b, std::size_t m,
                     std::size_t d, float* out);

}  // namespace careg
