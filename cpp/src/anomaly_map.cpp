// Fused so each output row is touched while it is in cache: every thread owns a
// band of output rows, unwarps the band plus its blur halo, blurs vertically,
// then horizontally, and keeps the band maximum. Halo rows are recomputed by
// neighbouring bands rather than synchronised: cheaper than a barrier.
#include "careg/anomaly_map.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "careg/affine.h"
#include "careg/blur.h"
#include "careg/error.h"
#include "careg/parallel.h"

namespace careg {
namespace {

inline float nan_max(float m, float v) { return (v > m || v != v) && m == m ? v : m; }

float band(const float* plane, std::size_t h, std::size_t w, const float* t, std::size_t H,
           std::size_t W, const std::vector<float>& taps, std::size_t y0, std::size_t y1,
           float* out) {
  const std::size_t r = taps.size() - 1;
  std::size_t lo = y0 > r ? y0 - r : 0, hi = std::min(H, y1 + r);
  std::vector<float> warped((hi - lo) * W), vert((y1 - y0) * W), pad(W + 2 * r);
  for (std::size_t y = lo; y < hi; ++y)
    affine_sample_row(plane, h, w, t, H, W, y, warped.data() + (y - lo) * W);
  blur_vertical([&](std::size_t i) { return warped.data() + (i - lo) * W; }, H, W, taps, y0, y1,
                vert.data());
  float m = -std::numeric_limits<float>::infinity();
  for (std::size_t y = y0; y < y1; ++y) {
    float* o = out + y * W;
    blur_horizontal_row(vert.data() + (y - y0) * W, W, taps, pad.data(), o);
    for (std::size_t x = 0; x < W; ++x) m = nan_max(m, o[x]);
  }
  return m;
}

void check_invertible(const float* t, std::size_t b) {
  check_theta(t, b, "anomaly_map: theta_inv");
  double det = double(t[0]) * t[4] - double(t[1]) * t[3];
  CAREG_CHECK(std::fabs(det) > 1e-8, "anomaly_map: theta_inv[" << b << "] is not invertible (det "
                                         << det << "); the registration produced a degenerate transform");
}

}  // namespace

void anomaly_map(const float* reg, std::size_t B, std::size_t h, std::size_t w,
                 const float* theta_inv, std::size_t out_h, std::size_t out_w, float sigma,
                 float* maps, float* score, int threads) {
  std::vector<float> taps = gaussian_taps(sigma);
  int nt = resolve_threads(threads);
  if (B == 0) return;
  CAREG_CHECK(h > 0 && w > 0 && out_h > 0 && out_w > 0 && h * w < (std::size_t(1) << 31),
              "anomaly_map: heatmap " << h << "x" << w << " and output " << out_h << "x" << out_w
                                      << " must be non-empty (and the heatmap below 2^31 cells)");
  if (theta_inv)
    for (std::size_t b = 0; b < B; ++b) check_invertible(theta_inv + 6 * b, b);
  // Bands of >= 32 rows keep the recomputed halo (2r rows) a minor cost.
  // Below ~256k output pixels per call a thread start (~50 us) costs more than it saves.
  if (B * out_h * out_w < (std::size_t(1) << 18)) nt = 1;
  std::size_t bands = B >= std::size_t(nt) ? 1 : std::max<std::size_t>(1, std::min<std::size_t>(nt, out_h / 32));
  std::size_t step = (out_h + bands - 1) / bands;
  std::vector<float> band_max(B * bands);
  parallel_for(B * bands, nt, 1, [&](std::size_t i0, std::size_t i1) {
    for (std::size_t i = i0; i < i1; ++i) {
      std::size_t b = i / bands, y0 = (i % bands) * step, y1 = std::min(out_h, y0 + step);
      const float* t = theta_inv ? theta_inv + 6 * b : nullptr;
      band_max[i] = y0 < y1 ? band(reg + b * h * w, h, w, t, out_h, out_w, taps, y0, y1,
                                   maps + b * out_h * out_w)
                            : -std::numeric_limits<float>::infinity();
    }
  });
  for (std::size_t b = 0; b < B; ++b) {
    float m = -std::numeric_limits<float>::infinity();
    for (std::size_t i = 0; i < bands; ++i) m = nan_max(m, band_max[b * bands + i]);
    score[b] = m;
  }
}

}  // namespace careg
