// Separable Gaussian blur of heatmaps (radius ceil(4 sigma), reflect border as
// scipy.ndimage mode="reflect" / OpenCV BORDER_REFLECT: d c b a | a b c d).
#pragma once
#include <cstddef>
#include <vector>

namespace careg {

// Normalised taps w[0..r] (w[t] = weight at offset +-t). sigma = 0 gives {1}.
std::vector<float> gaussian_taps(float sigma);

// Index i (any integer) folded into [0, n) by half-sample reflection.
std::size_t reflect_index_slow(long i, std::size_t n);
inline std::size_t reflect_index(long i, std::size_t n) {
  return i >= 0 && std::size_t(i) < n ? std::size_t(i) : reflect_index_slow(i, n);
}

// maps [B, H, W] -> out [B, H, W]; sigma >= 0 and finite (0 = copy).
void gaussian_blur(const float* maps, std::size_t B, std::size_t H, std::size_t W, float sigma,
                   float* out, int threads = 0);

// out[x] = taps[0]*c[x] + sum_t taps[t]*(lo[t][x] + hi[t][x]) with the sum for
// 8 columns kept in a register across all taps (one store per 8 outputs).
void blur_combine(const float* c, const float* const* lo, const float* const* hi,
                  const std::vector<float>& taps, std::size_t W, float* out);

// Vertical pass for output rows [y0, y1): rows(i) returns source row i (0 <= i < H).
template <class Rows>
void blur_vertical(Rows rows, std::size_t H, std::size_t W, const std::vector<float>& taps,
                   std::size_t y0, std::size_t y1, float* out /* (y1-y0) x W */) {
  const long r = long(taps.size()) - 1;
  std::vector<const float*> lo(taps.size()), hi(taps.size());
  for (std::size_t y = y0; y < y1; ++y) {
    for (long t = 1; t <= r; ++t) {
      lo[t] = rows(reflect_index(long(y) - t, H));
      hi[t] = rows(reflect_index(long(y) + t, H));
    }
    blur_combine(rows(y), lo.data(), hi.data(), taps, W, out + (y - y0) * W);
  }
}

// Horizontal pass of one row in place of `out`; pad has room for W + 2r floats.
void blur_horizontal_row(const float* in, std::size_t W, const std::vector<float>& taps,
                         float* pad, float* out);

}  // namespace careg
