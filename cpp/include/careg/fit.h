// Enrollment's heavy loops, in the core because they are measurably faster here
// (bench/bench_core.py, "fit" rows): the PaDiM/OrthoAD Gaussian per position and
// PatchCore's greedy k-centre coreset.
#pragma once
#include <cstddef>
#include <cstdint>

namespace careg {

// x [N, P, D] -> mean [P, D] and the packed lower-triangular L with L L^T =
// (cov + eps I)^-1 per position (cov with N-1 in the denominator, N = 1: eps I
// alone), row-major packing L[i, j] at i(i+1)/2 + j, float32. Computed in double:
// Cholesky of the reversed covariance J S J = C C^T, then L = J C^-T J (the unique
// lower factor with positive diagonal). Throws if a covariance is not positive
// definite (a non-finite feature).
void gaussian_factor(const float* x, std::size_t N, std::size_t P, std::size_t D, double eps, float* mean,
                     float* factor, int threads = 0);

// Greedy k-centre on rows z [n, k]: idx[0] = first, then repeatedly the row farthest
// (squared L2, |a|^2 - 2 a.c + |c|^2 in float as the NumPy original) from those
// chosen; ties go to the lower index. Returns the covering radius (sqrt of the
// largest remaining squared distance, 0 if every row is chosen).
float greedy_coreset(const float* z, std::size_t n, std::size_t k, std::size_t m, std::size_t first,
                     std::int64_t* idx);

}  // namespace careg
