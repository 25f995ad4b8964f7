#include "careg/blur.h"

#include <cmath>

#include "careg/error.h"
#include "careg/parallel.h"

namespace careg {

std::vector<float> gaussian_taps(float sigma) {
  CAREG_CHECK(std::isfinite(sigma) && sigma >= 0.f && sigma <= 1000.f,
              "gaussian blur: sigma must be finite and in [0, 1000], got " << sigma);
  std::size_t r = std::size_t(std::ceil(4.0 * double(sigma)));
  std::vector<double> w(r + 1);
  double sum = 0.0;
  for (std::size_t t = 0; t <= r; ++t) {
    w[t] = r == 0 ? 1.0 : std::exp(-double(t * t) / (2.0 * double(sigma) * sigma));
    sum += t == 0 ? w[t] : 2.0 * w[t];
  }
  std::vector<float> out(r + 1);
  for (std::size_t t = 0; t <= r; ++t) out[t] = float(w[t] / sum);
  return out;
}

std::size_t reflect_index(long i, std::size_t n) {
  long period = 2 * long(n);
  long m = i % period;
  if (m < 0) m += period;
  return std::size_t(m < long(n) ? m : period - 1 - m);
}

void blur_horizontal_row(const float* in, std::size_t W, const std::vector<float>& taps,
                         float* pad, float* out) {
  const long r = long(taps.size()) - 1;
  for (long x = -r; x < long(W) + r; ++x) pad[x + r] = in[reflect_index(x, W)];
  const float* c = pad + r;
  for (std::size_t x = 0; x < W; ++x) out[x] = taps[0] * c[x];
  for (long t = 1; t <= r; ++t) {
    const float* a = c - t;
    const float* b = c + t;
    float wt = taps[t];
    for (std::size_t x = 0; x < W; ++x) out[x] += wt * (a[x] + b[x]);
  }
}

void gaussian_blur(const float* maps, std::size_t B, std::size_t H, std::size_t W, float sigma,
                   float* out, int threads) {
  std::vector<float> taps = gaussian_taps(sigma);
  resolve_threads(threads);
  if (B == 0 || H == 0 || W == 0) return;
  const std::size_t r = taps.size() - 1;
  parallel_for(B * H, threads, 8, [&](std::size_t r0, std::size_t r1) {
    std::vector<float> col(W), pad(W + 2 * r);
    for (std::size_t row = r0; row < r1; ++row) {
      std::size_t b = row / H, y = row % H;
      const float* plane = maps + b * H * W;
      blur_vertical([&](std::size_t i) { return plane + i * W; }, H, W, taps, y, y + 1,
                    col.data());
      blur_horizontal_row(col.data(), W, taps, pad.data(), out + row * W);
    }
  });
}

}  // namespace careg
