// Blocked over positions (threads) and batch (inner loop), so each position's
// factor is streamed from memory exactly once per batch: at B = 1 the kernel is
// bandwidth-bound (the factor is the big operand), at B = 8 it is FMA-bound.
#include "careg/mahalanobis.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "careg/half.h"
#include "careg/parallel.h"

namespace careg {
namespace {

// y[0..n) += a * row[0..n): the loop the compiler turns into FMAs.
inline void axpy(float* __restrict y, const float* __restrict row, float a, std::size_t n) {
  for (std::size_t j = 0; j < n; ++j) y[j] += a * row[j];
}

struct Scratch {
  std::vector<float> diff, acc, row;
  Scratch(std::size_t B, std::size_t D) : diff(B * D), acc(B * D), row(D) {}
};

// z_b = L^T (x_b - mu) accumulated row by row of L: row i adds diff_b[i] * L[i, 0..i].
void one_position(const float* x, std::size_t B, std::size_t P, std::size_t D, std::size_t p,
                  const float* mean, const void* factor, Storage st, float* out, Scratch& s) {
  const std::size_t T = packed_size(D);
  const float* mu = mean + p * D;
  for (std::size_t b = 0; b < B; ++b) {
    const float* xb = x + (b * P + p) * D;
    float* d = s.diff.data() + b * D;
    for (std::size_t i = 0; i < D; ++i) d[i] = xb[i] - mu[i];
  }
  std::fill(s.acc.begin(), s.acc.end(), 0.f);
  const float* f32 = st == Storage::F32 ? static_cast<const float*>(factor) + p * T : nullptr;
  const std::uint16_t* f16 =
      st == Storage::F16 ? static_cast<const std::uint16_t*>(factor) + p * T : nullptr;
  for (std::size_t i = 0; i < D; ++i) {
    std::size_t off = i * (i + 1) / 2;
    const float* row = f32 ? f32 + off : s.row.data();
    if (f16) half_to_float_row(f16 + off, s.row.data(), i + 1);
    for (std::size_t b = 0; b < B; ++b)
      axpy(s.acc.data() + b * D, row, s.diff[b * D + i], i + 1);
  }
  for (std::size_t b = 0; b < B; ++b) {
    const float* z = s.acc.data() + b * D;
    float sum = 0.f;
    for (std::size_t j = 0; j < D; ++j) sum += z[j] * z[j];
    out[b * P + p] = std::sqrt(sum);
  }
}

}  // namespace

void mahalanobis(const float* x, std::size_t B, std::size_t P, std::size_t D,
                 const float* mean, const void* factor, Storage storage, float* out,
                 int threads) {
  if (B == 0 || P == 0) return;
  // Bound the per-thread scratch: large batches are processed in slices.
  const std::size_t bslice = 16;
  parallel_for(P, threads, 8, [&](std::size_t p0, std::size_t p1) {
    for (std::size_t b0 = 0; b0 < B; b0 += bslice) {
      std::size_t nb = std::min(bslice, B - b0);
      Scratch s(nb, D);
      for (std::size_t p = p0; p < p1; ++p)
        one_position(x + b0 * P * D, nb, P, D, p, mean, factor, storage, out + b0 * P, s);
    }
  });
}

}  // namespace careg
