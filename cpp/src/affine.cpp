#include "careg/affine.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "careg/error.h"
#include "careg/parallel.h"

namespace careg {
namespace {

// Source taps of one output pixel: integer corners and bilinear weights.
struct Tap {
  std::size_t x0, x1, y0, y1;
  float wx, wy;
};

// grid_sample unnormalisation for align_corners=False, then border clamp.
inline float to_pixel(double v, std::size_t n) {
  double pix = ((v + 1.0) * double(n) - 1.0) / 2.0;
  return float(std::min(double(n - 1), std::max(0.0, pix)));
}

inline Tap make_tap(const float* t, std::size_t x, std::size_t y, std::size_t out_w,
                    std::size_t out_h, std::size_t w, std::size_t h) {
  double px = (2.0 * x + 1.0) / double(out_w) - 1.0;
  double py = (2.0 * y + 1.0) / double(out_h) - 1.0;
  double sx = t ? t[0] * px + t[1] * py + t[2] : px;
  double sy = t ? t[3] * px + t[4] * py + t[5] : py;
  float ix = to_pixel(sx, w), iy = to_pixel(sy, h);
  std::size_t x0 = std::size_t(ix), y0 = std::size_t(iy);
  return {x0, std::min(x0 + 1, w - 1), y0, std::min(y0 + 1, h - 1), ix - float(x0),
          iy - float(y0)};
}

inline float bilinear(const float* plane, std::size_t w, const Tap& k) {
  const float* r0 = plane + k.y0 * w;
  const float* r1 = plane + k.y1 * w;
  float top = r0[k.x0] + k.wx * (r0[k.x1] - r0[k.x0]);
  float bot = r1[k.x0] + k.wx * (r1[k.x1] - r1[k.x0]);
  return top + k.wy * (bot - top);
}

}  // namespace

void check_theta(const float* theta, std::size_t b, const char* what) {
  for (int i = 0; i < 6; ++i)
    CAREG_CHECK(std::isfinite(theta[i]),
                what << "[" << b << "] has a non-finite entry; pass a finite affine matrix");
}

void affine_sample_row(const float* plane, std::size_t h, std::size_t w, const float* theta,
                       std::size_t out_h, std::size_t out_w, std::size_t y, float* out_row) {
  for (std::size_t x = 0; x < out_w; ++x)
    out_row[x] = bilinear(plane, w, make_tap(theta, x, y, out_w, out_h, w, h));
}

void affine_sample(const float* src, std::size_t B, std::size_t C, std::size_t h,
                   std::size_t w, const float* theta, std::size_t out_h, std::size_t out_w,
                   float* out, int threads) {
  resolve_threads(threads);
  if (B == 0 || C == 0 || out_h == 0 || out_w == 0) return;
  CAREG_CHECK(h > 0 && w > 0, "affine_sample: source must be at least 1x1, got " << h << "x" << w);
  for (std::size_t b = 0; b < B; ++b) check_theta(theta + 6 * b, b, "affine_sample: theta");
  // One task per output row of one image: taps are computed once, used for every channel.
  parallel_for(B * out_h, threads, 4, [&](std::size_t r0, std::size_t r1) {
    std::vector<Tap> taps(out_w);
    for (std::size_t r = r0; r < r1; ++r) {
      std::size_t b = r / out_h, y = r % out_h;
      for (std::size_t x = 0; x < out_w; ++x)
        taps[x] = make_tap(theta + 6 * b, x, y, out_w, out_h, w, h);
      for (std::size_t c = 0; c < C; ++c) {
        const float* plane = src + (b * C + c) * h * w;
        float* orow = out + ((b * C + c) * out_h + y) * out_w;
        for (std::size_t x = 0; x < out_w; ++x) orow[x] = bilinear(plane, w, taps[x]);
      }
    }
  });
}

}  // namespace careg
