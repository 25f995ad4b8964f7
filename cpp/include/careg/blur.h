// Separable Gaussian blur of heatmaps (radius ceil(4 sigma), reflect border as
// scipy.ndimage mode="reflect" / OpenCV BORDER_REFLECT: d c b a | a b c d).
#pragma once
#include <cstddef>
#include <vector>

namespace careg {

// Normalised taps w[0..r] (w[t] = weight at offset +-t). sigma = 0 gives {1}.
std::vector<float> gaussian_taps(float sigma);

// Index i (any integer) folded into [0, n) by half-sample reflection.
std::size_t reflect_index(long i, std::size_t n);

// maps [B, H, W] -> out [B, H, W]; sigma >= 0 and finite (0 = copy).
void gaussian_blur(const float* maps, std::size_t B, std::size_t H, std::size_t W, float sigma,
                   float* out, int threads = 0);

// Vertical pass for output rows [y0, y1): rows(i) returns source row i (0 <= i < H).
template <class Rows>
void blur_vertical(Rows rows, std::size_t H, std::size_t W, const std::vector<float>& taps,
                   std::size_t y0, std::size_t y1, float* out /* (y1-y0) x W */) {
  const long r = long(taps.size()) - 1;
  for (std::size_t y = y0; y < y1; ++y) {
    float* o = out + (y - y0) * W;
    const float* c = rows(y);
    for (std::size_t x = 0; x < W; ++x) o[x] = taps[0] * c[x];
    for (long t = 1; t <= r; ++t) {
      const float* a = rows(reflect_index(long(y) - t, H));
      const float* b = rows(reflect_index(long(y) + t, H));
      float wt = taps[t];
      for (std::size_t x = 0; x < W; ++x) o[x] += wt * (a[x] + b[x]);
    }
  }
}

// Horizontal pass of one row in place of `out`; pad has room for W + 2r floats.
void blur_horizontal_row(const float* in, std::size_t W, const std::vector<float>& taps,
                         float* pad, float* out);

}  // namespace careg
