#include "careg/blur.h"

#include <cmath>
#include <cstring>

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

std::size_t reflect_index_slow(long i, std::size_t n) {
  long period = 2 * long(n);
  long m = i % period;
  if (m < 0) m += period;
  return std::size_t(m < long(n) ? m : period - 1 - m);
}

namespace {
typedef float v8 __attribute__((vector_size(32)));
inline v8 load8(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
}  // namespace

void blur_combine(const float* c, const float* const* lo, const float* const* hi,
                  const std::vector<float>& taps, std::size_t W, float* out) {
  const std::size_t r = taps.size() - 1;
  std::size_t x = 0;
  // Four independent accumulators: one chain would wait on FMA latency every tap.
  for (; x + 32 <= W; x += 32) {
    v8 a0 = taps[0] * load8(c + x), a1 = taps[0] * load8(c + x + 8);
    v8 a2 = taps[0] * load8(c + x + 16), a3 = taps[0] * load8(c + x + 24);
    for (std::size_t t = 1; t <= r; ++t) {
      const float *l = lo[t] + x, *h = hi[t] + x;
      float wt = taps[t];
      a0 += wt * (load8(l) + load8(h));
      a1 += wt * (load8(l + 8) + load8(h + 8));
      a2 += wt * (load8(l + 16) + load8(h + 16));
      a3 += wt * (load8(l + 24) + load8(h + 24));
    }
    std::memcpy(out + x, &a0, sizeof a0);
    std::memcpy(out + x + 8, &a1, sizeof a1);
    std::memcpy(out + x + 16, &a2, sizeof a2);
    std::memcpy(out + x + 24, &a3, sizeof a3);
  }
  for (; x + 8 <= W; x += 8) {
    v8 acc = taps[0] * load8(c + x);
    for (std::size_t t = 1; t <= r; ++t) acc += taps[t] * (load8(lo[t] + x) + load8(hi[t] + x));
    std::memcpy(out + x, &acc, sizeof acc);
  }
  for (; x < W; ++x) {
    float acc = taps[0] * c[x];
    for (std::size_t t = 1; t <= r; ++t) acc += taps[t] * (lo[t][x] + hi[t][x]);
    out[x] = acc;
  }
}

void blur_horizontal_row(const float* in, std::size_t W, const std::vector<float>& taps,
                         float* pad, float* out) {
  const long r = long(taps.size()) - 1;
  for (long x = -r; x < 0; ++x) pad[x + r] = in[reflect_index(x, W)];
  std::memcpy(pad + r, in, W * sizeof(float));
  for (long x = long(W); x < long(W) + r; ++x) pad[x + r] = in[reflect_index(x, W)];
  // Shifted views of the padded row play the role of the neighbouring rows.
  const float* c = pad + r;
  const float* lo[64];
  const float* hi[64];
  std::vector<const float*> lo_v, hi_v;
  const float** plo = lo;
  const float** phi = hi;
  if (taps.size() > 64) {
    lo_v.resize(taps.size());
    hi_v.resize(taps.size());
    plo = lo_v.data();
    phi = hi_v.data();
  }
  for (long t = 1; t <= r; ++t) {
    plo[t] = c - t;
    phi[t] = c + t;
  }
  blur_combine(c, plo, phi, taps, W, out);
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
