// Exact k-nearest-neighbour search by squared L2 against a memory bank (PatchCore).
#pragma once
#include <cstddef>
#include <cstdint>

namespace careg {

// For each query row q[n] (of N, dimension D): the k nearest bank rows (of M),
// sqdist[n*k + r] ascending, idx[n*k + r] their bank indices. Distances of the
// winners are recomputed as sum((q - m)^2), so they are exact and never negative.
// Ties keep the lower bank index first. A query with a non-finite value gets
// NaN distances and index -1; bank rows with non-finite values are never chosen.
// Requires 1 <= k <= M.
void knn(const float* q, std::size_t N, const float* bank, std::size_t M, std::size_t D,
         std::size_t k, float* sqdist, std::int64_t* idx, int threads = 0);

// Registered-local variant: q is [B, P, D] with P = grid_h * grid_w; bank row m
// is a candidate for position p only if its cell bank_pos[m] (= row*grid_w+col)
// lies within +-radius rows and columns of p. Positions with fewer than k
// candidates get +inf distances and index -1 in the missing slots.
void knn_local(const float* q, std::size_t B, std::size_t P, std::size_t D,
               const float* bank, std::size_t M, const std::int32_t* bank_pos,
               std::size_t grid_h, std::size_t grid_w, std::size_t radius, std::size_t k,
               float* sqdist, std::int64_t* idx, int threads = 0);

}  // namespace careg
