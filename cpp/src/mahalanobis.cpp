// Blocked over positions (threads) and batch (register tile), so each position's
// factor is streamed from memory exactly once per batch of up to 16 images: at
// B = 1 the kernel is bandwidth-bound (the factor is the big operand), at B = 8
// it is FMA-bound.
//
// z_b = L^T d_b is computed in column panels of 8: for panel c the rows
// i >= 8c of L contribute d_b[i] * L[i, 8c .. 8c+7], with the 8 outputs of up
// to 8 images held in registers (one load of L feeds 8 FMAs); only |z_b|^2 is
// kept. The panel reads the packed layout in place (rows closer than 8 to the
// diagonal go through a masked load); fp16 factors are first converted per position into
// an fp32 scratch (sequential, F16C). The next position's fp32 factor is
// prefetched into L2 while this one is computed: the panel walk is not a
// pattern the hardware prefetcher follows.
#include "careg/mahalanobis.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "careg/half.h"
#include "careg/parallel.h"

namespace careg {
namespace {

constexpr std::size_t W = 8, NB = 8, BSLICE = 16;
typedef float v8 __attribute__((vector_size(32)));

inline v8 load8(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline float sumsq(v8 a) {
  float s = 0.f;
  for (int i = 0; i < 8; ++i) s += a[i] * a[i];
  return s;
}

// pad[0..8) = row[0..n) then zeros, n < 8, never reading past row[n-1].
inline void masked_row(const float* row, std::size_t n, float* pad) {
#if defined(__AVX2__)
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), lane);
  _mm256_storeu_ps(pad, _mm256_maskload_ps(row, m));
#else
  std::memset(pad, 0, W * sizeof(float));
  std::memcpy(pad, row, n * sizeof(float));
#endif
}

// total[b] = |L^T d_b|^2 for nb <= NB images; f = one position's packed factor.
template <std::size_t nb>
void tile(const float* f, std::size_t D, const float* const* diff, float* out) {
  float total[NB] = {};
  alignas(32) float pad[W];
  for (std::size_t base = 0; base < D; base += W) {
    v8 acc[nb] = {};
    const float* row = f + base * (base + 1) / 2 + base;
    for (std::size_t i = base; i < D; row += ++i) {  // row of i+1 starts i+1 floats later
      std::size_t n = i + 1 - base;
      v8 l;
      if (n < W) {  // near the diagonal: the next row's values follow, mask them off
        masked_row(row, n, pad);
        l = load8(pad);
      } else {
        l = load8(row);
      }
      for (std::size_t b = 0; b < nb; ++b) acc[b] += diff[b][i] * l;
    }
    for (std::size_t b = 0; b < nb; ++b) total[b] += sumsq(acc[b]);
  }
  for (std::size_t b = 0; b < nb; ++b) out[b] = total[b];
}

void dispatch(std::size_t nb, const float* f, std::size_t D, const float* const* diff,
              float* out) {
  switch (nb) {
    case 1: return tile<1>(f, D, diff, out);
    case 2: return tile<2>(f, D, diff, out);
    case 3: return tile<3>(f, D, diff, out);
    case 4: return tile<4>(f, D, diff, out);
    case 5: return tile<5>(f, D, diff, out);
    case 6: return tile<6>(f, D, diff, out);
    case 7: return tile<7>(f, D, diff, out);
    default: return tile<8>(f, D, diff, out);
  }
}

inline void prefetch(const void* p, std::size_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (std::size_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 0, 2);
}

void positions(const float* x, std::size_t B, std::size_t P, std::size_t D, const float* mean,
               const void* factor, Storage st, float* out, std::size_t p0, std::size_t p1) {
  const std::size_t T = packed_size(D);
  std::vector<float> diff(std::min(B, BSLICE) * D), f32(st == Storage::F16 ? T + W : 0);
  for (std::size_t b0 = 0; b0 < B; b0 += BSLICE) {  // large batches: factor re-read per slice
    std::size_t nbs = std::min(BSLICE, B - b0);
    for (std::size_t p = p0; p < p1; ++p) {
      const float* f;
      if (st == Storage::F16) {
        half_to_float_row(static_cast<const std::uint16_t*>(factor) + p * T, f32.data(), T);
        f = f32.data();
      } else {
        f = static_cast<const float*>(factor) + p * T;
        if (p + 1 < p1) prefetch(f + T, T * sizeof(float));
      }
      const float* mu = mean + p * D;
      for (std::size_t b = 0; b < nbs; ++b) {
        const float* xb = x + ((b0 + b) * P + p) * D;
        for (std::size_t i = 0; i < D; ++i) diff[b * D + i] = xb[i] - mu[i];
      }
      for (std::size_t b = 0; b < nbs; b += NB) {
        std::size_t nb = std::min(NB, nbs - b);
        const float* rows[NB];
        for (std::size_t r = 0; r < NB; ++r) rows[r] = diff.data() + (b + std::min(r, nb - 1)) * D;
        float sq[NB];
        dispatch(nb, f, D, rows, sq);
        for (std::size_t r = 0; r < nb; ++r) out[(b0 + b + r) * P + p] = std::sqrt(sq[r]);
      }
    }
  }
}

}  // namespace

void mahalanobis(const float* x, std::size_t B, std::size_t P, std::size_t D,
                 const float* mean, const void* factor, Storage storage, float* out,
                 int threads) {
  resolve_threads(threads);
  if (B == 0 || P == 0) return;
  if (D == 0) {
    std::fill(out, out + B * P, 0.f);
    return;
  }
  parallel_for(P, threads, 8, [&](std::size_t p0, std::size_t p1) {
    positions(x, B, P, D, mean, factor, storage, out, p0, p1);
  });
}

}  // namespace careg
