#include "careg/affine.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
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

// Output pixel x of row y -> source pixel coordinates, as an affine function of x:
// ix(x) = ax * x + bx (same for iy), folding affine_grid's normalisation,
// theta and grid_sample's unnormalisation (align_corners=False) into 4 numbers
// per row, so the inner loop has no divisions.
struct RowMap {
  double ax, bx, ay, by;
};

inline RowMap row_map(const float* t, std::size_t y, std::size_t out_w, std::size_t out_h,
                      std::size_t w, std::size_t h) {
  static const float eye[6] = {1, 0, 0, 0, 1, 0};
  if (!t) t = eye;
  double py = (2.0 * double(y) + 1.0) / double(out_h) - 1.0;
  // normalised px = (2x+1)/out_w - 1 = sx * x + s0
  double sx = 2.0 / double(out_w), s0 = 1.0 / double(out_w) - 1.0;
  double nx_a = t[0] * sx, nx_b = t[0] * s0 + t[1] * py + t[2];
  double ny_a = t[3] * sx, ny_b = t[3] * s0 + t[4] * py + t[5];
  // pixel = ((n + 1) * size - 1) / 2
  return {nx_a * w / 2.0, ((nx_b + 1.0) * w - 1.0) / 2.0, ny_a * h / 2.0, ((ny_b + 1.0) * h - 1.0) / 2.0};
}

inline Tap make_tap(const RowMap& m, std::size_t x, std::size_t w, std::size_t h) {
  float ix = float(std::min(double(w - 1), std::max(0.0, m.ax * double(x) + m.bx)));
  float iy = float(std::min(double(h - 1), std::max(0.0, m.ay * double(x) + m.by)));
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

// Two vectorisable passes: source coordinates -> (flat index, weights) for the
// whole row, then the four-corner gather and blend.
void affine_sample_row(const float* plane, std::size_t h, std::size_t w, const float* theta,
                       std::size_t out_h, std::size_t out_w, std::size_t y, float* out_row) {
  RowMap m = row_map(theta, y, out_w, out_h, w, h);
  thread_local std::vector<float> wxs, wys;
  thread_local std::vector<std::int32_t> base, dxs, dys;
  wxs.resize(out_w), wys.resize(out_w), base.resize(out_w), dxs.resize(out_w), dys.resize(out_w);
  const float ax = float(m.ax), bx = float(m.bx), ay = float(m.ay), by = float(m.by);
  const float wmax = float(w - 1), hmax = float(h - 1);
  const std::int32_t iw = std::int32_t(w), ih = std::int32_t(h);
  // restrict-qualified locals: without them GCC assumes the five arrays alias
  // and leaves this loop scalar.
  float* __restrict wx = wxs.data();
  float* __restrict wy = wys.data();
  std::int32_t* __restrict bs = base.data();
  std::int32_t* __restrict dx = dxs.data();
  std::int32_t* __restrict dy = dys.data();
  for (std::size_t x = 0; x < out_w; ++x) {
    float fx = std::min(wmax, std::max(0.f, ax * float(std::int32_t(x)) + bx));
    float fy = std::min(hmax, std::max(0.f, ay * float(std::int32_t(x)) + by));
    std::int32_t x0 = std::int32_t(fx), y0 = std::int32_t(fy);
    wx[x] = fx - float(x0);
    wy[x] = fy - float(y0);
    bs[x] = y0 * iw + x0;
    dx[x] = x0 + 1 < iw ? 1 : 0;
    dy[x] = y0 + 1 < ih ? iw : 0;
  }
  std::size_t x = 0;
  for (; x < out_w; ++x) {
    const float* p = plane + base[x];
    float v00 = p[0], v01 = p[dxs[x]], v10 = p[dys[x]], v11 = p[dys[x] + dxs[x]];
    float top = v00 + wxs[x] * (v01 - v00), bot = v10 + wxs[x] * (v11 - v10);
    out_row[x] = top + wys[x] * (bot - top);
  }
}

void affine_sample(const float* src, std::size_t B, std::size_t C, std::size_t h,
                   std::size_t w, const float* theta, std::size_t out_h, std::size_t out_w,
                   float* out, int threads) {
  resolve_threads(threads);
  if (B == 0 || C == 0 || out_h == 0 || out_w == 0) return;
  CAREG_CHECK(h > 0 && w > 0 && h * w < (std::size_t(1) << 31),
              "affine_sample: source must be at least 1x1 and below 2^31 pixels, got " << h << "x" << w);
  for (std::size_t b = 0; b < B; ++b) check_theta(theta + 6 * b, b, "affine_sample: theta");
  // One task per output row of one image: taps are computed once, used for every channel.
  parallel_for(B * out_h, threads, 4, [&](std::size_t r0, std::size_t r1) {
    std::vector<Tap> taps(out_w);
    for (std::size_t r = r0; r < r1; ++r) {
      std::size_t b = r / out_h, y = r % out_h;
      RowMap m = row_map(theta + 6 * b, y, out_w, out_h, w, h);
      for (std::size_t x = 0; x < out_w; ++x) taps[x] = make_tap(m, x, w, h);
      for (std::size_t c = 0; c < C; ++c) {
        const float* plane = src + (b * C + c) * h * w;
        float* orow = out + ((b * C + c) * out_h + y) * out_w;
        for (std::size_t x = 0; x < out_w; ++x) orow[x] = bilinear(plane, w, taps[x]);
      }
    }
  });
}

}  // namespace careg
