// Per-position Mahalanobis distance against a Gaussian profile (PaDiM / OrthoAD).
#pragma once
#include <cstddef>

namespace careg {

enum class Storage { F32, F16 };

// out[b, p] = sqrt(||L_p^T (x[b, p] - mean[p])||^2) with precision_p = L_p L_p^T.
// factor: [P, D(D+1)/2] packed lower-triangular, row-major (L[i, j], j <= i, at
// i(i+1)/2 + j), stored as fp32 or fp16 (fp32 accumulation either way).
// Non-finite features give a non-finite distance at that position only.
void mahalanobis(const float* x, std::size_t B, std::size_t P, std::size_t D,
                 const float* mean, const void* factor, Storage storage, float* out,
                 int threads = 0);

inline std::size_t packed_size(std::size_t D) { return D * (D + 1) / 2; }

}  // namespace careg
