// Feature assembly: raw encoder outputs -> [B, P, D] on the scoring grid.
// The fixed input transform (channel subset or projection) is applied per stage
// before resampling: both are linear across channels and bilinear resampling is
// linear across positions, so the order changes only the cost (a projection at
// the stage's own resolution is far cheaper than at the grid's).
#include <algorithm>
#include <cmath>
#include <vector>

#include "careg/affine.h"
#include "careg/error.h"
#include "careg/parallel.h"
#include "careg/road.h"

namespace careg {
namespace {

const char* kFeat[3] = {"feat1", "feat2", "feat3"};

std::size_t count_nonfinite(const float* a, std::size_t n) {
  std::size_t bad = 0;
  for (std::size_t i = 0; i < n; ++i) bad += !std::isfinite(a[i]);
  return bad;
}

// Per image: the first field with a non-finite value is named, with its count.
void check_finite(const Outputs& o) {
  for (std::size_t b = 0; b < o.batch; ++b) {
    for (int k = 0; k < 3; ++k) {
      std::size_t n = o.channels[k] * o.height[k] * o.width[k];
      std::size_t bad = count_nonfinite(o.feat[k] + b * n, n);
      CAREG_CHECK(bad == 0, kFeat[k] << "[" << b << "]: " << bad << " non-finite value(s) (NaN/inf) in the "
                                     << "encoder output; the encoder or its input is broken");
    }
    std::size_t bt = count_nonfinite(o.theta + b * 18, 18), bi = count_nonfinite(o.theta_inv + b * 18, 18);
    CAREG_CHECK(bt == 0, "theta[" << b << "]: non-finite value(s) (NaN/inf) in the encoder output");
    CAREG_CHECK(bi == 0, "theta_inv[" << b << "]: non-finite value(s) (NaN/inf) in the encoder output");
  }
}

// 2x3 affine a∘b (apply b, then a), in double.
void compose(const float* a, const float* b, float* out) {
  for (int r = 0; r < 2; ++r) {
    const float* ar = a + 3 * r;
    out[3 * r + 0] = float(double(ar[0]) * b[0] + double(ar[1]) * b[3]);
    out[3 * r + 1] = float(double(ar[0]) * b[1] + double(ar[1]) * b[4]);
    out[3 * r + 2] = float(double(ar[0]) * b[2] + double(ar[1]) * b[5] + ar[2]);
  }
}

void sample_plane(const float* plane, std::size_t h, std::size_t w, const float* theta,
                  std::size_t gh, std::size_t gw, float* out) {
  for (std::size_t y = 0; y < gh; ++y) affine_sample_row(plane, h, w, theta, gh, gw, y, out + y * gw);
}

// Mean over each 3x3 neighbourhood, edge cells replicated: [gh, gw] -> [gh, gw].
void aggregate_plane(const float* in, std::size_t gh, std::size_t gw, float* out) {
  for (std::size_t y = 0; y < gh; ++y) {
    std::size_t ys[3] = {y ? y - 1 : 0, y, std::min(gh - 1, y + 1)};
    for (std::size_t x = 0; x < gw; ++x) {
      std::size_t xs[3] = {x ? x - 1 : 0, x, std::min(gw - 1, x + 1)};
      float s = 0.f;
      for (std::size_t yy : ys)
        for (std::size_t xx : xs) s += in[yy * gw + xx];
      out[y * gw + x] = s / 9.0f;
    }
  }
}

// Bilinear source taps of one output cell through theta (align_corners=False, border):
// plane offsets of the four corners and the weights.
struct Tap {
  std::size_t o00, o01, o10, o11;
  float wx, wy;
};

Tap tap_at(const float* t, std::size_t y, std::size_t x, std::size_t gh, std::size_t gw, std::size_t h,
           std::size_t w) {
  double px = (2.0 * double(x) + 1.0) / double(gw) - 1.0, py = (2.0 * double(y) + 1.0) / double(gh) - 1.0;
  double sx = t[0] * px + t[1] * py + t[2], sy = t[3] * px + t[4] * py + t[5];
  double ix = std::min(double(w - 1), std::max(0.0, ((sx + 1.0) * double(w) - 1.0) / 2.0));
  double iy = std::min(double(h - 1), std::max(0.0, ((sy + 1.0) * double(h) - 1.0) / 2.0));
  std::size_t x0 = std::size_t(ix), y0 = std::size_t(iy);
  std::size_t x1 = std::min(x0 + 1, w - 1), y1 = std::min(y0 + 1, h - 1);
  return {y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1, float(ix - double(x0)), float(iy - double(y0))};
}

// Channel selection path, written straight into [P, D] rows: each cell's taps are
// computed once per stage and used for all its channels (no planes, no transpose).
void gather_cells(const Layout& L, const Outputs& o, const float* th, std::size_t b,
                  const std::vector<std::pair<int, std::size_t>>& src, std::size_t p0, std::size_t p1,
                  float* rows /* [P, D] of image b */) {
  const std::size_t gh = L.grid_h(), gw = L.grid_w(), D = src.size();
  for (std::size_t p = p0; p < p1; ++p) {
    const std::size_t y = p / gw, x = p % gw;
    float* out = rows + p * D;
    int k_tap = -1;
    Tap t{};
    const float* base = nullptr;
    std::size_t hw = 0;
    for (std::size_t j = 0; j < D; ++j) {
      int k = src[j].first;
      if (k != k_tap) {
        t = tap_at(th + (b * 3 + k) * 6, y, x, gh, gw, o.height[k], o.width[k]);
        hw = o.height[k] * o.width[k];
        base = o.feat[k] + b * o.channels[k] * hw;
        k_tap = k;
      }
      const float* pl = base + src[j].second * hw;
      float top = pl[t.o00] + t.wx * (pl[t.o01] - pl[t.o00]);
      float bot = pl[t.o10] + t.wx * (pl[t.o11] - pl[t.o10]);
      out[j] = top + t.wy * (bot - top);
    }
  }
}

// 3x3 mean of [P, D] rows on the gh x gw grid, edge cells replicated.
void aggregate_rows(const float* in, std::size_t gh, std::size_t gw, std::size_t D, std::size_t p0,
                    std::size_t p1, float* out) {
  for (std::size_t p = p0; p < p1; ++p) {
    const std::size_t y = p / gw, x = p % gw;
    std::size_t ys[3] = {y ? y - 1 : 0, y, std::min(gh - 1, y + 1)};
    std::size_t xs[3] = {x ? x - 1 : 0, x, std::min(gw - 1, x + 1)};
    float* o = out + p * D;
    std::fill(o, o + D, 0.f);
    for (std::size_t yy : ys)
      for (std::size_t xx : xs) {
        const float* r = in + (yy * gw + xx) * D;
        for (std::size_t d = 0; d < D; ++d) o[d] += r[d];
      }
    for (std::size_t d = 0; d < D; ++d) o[d] /= 9.0f;
  }
}

}  // namespace

std::size_t Layout::dim() const {
  if (!projection.empty()) return proj_dim;
  return channel_index.empty() ? d_in() : channel_index.size();
}

void Layout::validate() const {
  for (int k = 0; k < 3; ++k)
    CAREG_CHECK(channels[k] > 0 && channels[k] <= 65536,
                "profile features.channels[" << k << "] must be in [1, 65536], got " << channels[k]);
  CAREG_CHECK(grid_stride > 0 && input_h >= grid_stride && input_w >= grid_stride && input_h <= 65536 &&
                  input_w <= 65536,
              "profile features: input_size " << input_h << "x" << input_w << " and grid_stride " << grid_stride
                                              << " give an empty grid");
  CAREG_CHECK(channel_index.empty() || projection.empty(),
              "profile has both channel_index and projection; an estimator uses one of them");
  for (std::size_t i = 0; i < channel_index.size(); ++i)
    CAREG_CHECK(channel_index[i] >= 0 && std::size_t(channel_index[i]) < d_in(),
                "profile tensor channel_index[" << i << "] = " << channel_index[i] << " is outside the "
                                                << d_in() << " encoder channels (" << channels[0] << "+"
                                                << channels[1] << "+" << channels[2] << ")");
  if (!projection.empty())
    CAREG_CHECK(proj_dim > 0 && projection.size() == d_in() * proj_dim,
                "profile tensor projection must be [Din, D] with Din = " << d_in() << " encoder channels, got "
                                                                         << projection.size() << " values for D = "
                                                                         << proj_dim);
}

void assemble(const Layout& L, const Outputs& o, float* features, int threads) {
  resolve_threads(threads);
  L.validate();
  const std::size_t B = o.batch, gh = L.grid_h(), gw = L.grid_w(), P = gh * gw, D = L.dim();
  if (B == 0) return;
  CAREG_CHECK(o.theta && o.theta_inv, "theta and theta_inv must be given (the encoder emits both)");
  for (int k = 0; k < 3; ++k) {
    CAREG_CHECK(o.feat[k], kFeat[k] << " must not be NULL");
    CAREG_CHECK(o.channels[k] == L.channels[k],
                "encoder output " << kFeat[k] << " has " << o.channels[k] << " channels, the profile expects "
                                  << L.channels[k] << ": wrong model for this profile");
    CAREG_CHECK(o.height[k] > 0 && o.width[k] > 0 && o.height[k] * o.width[k] < (std::size_t(1) << 28),
                "encoder output " << kFeat[k] << " has an empty or oversized map " << o.height[k] << "x"
                                  << o.width[k]);
  }
  check_finite(o);
  // Sampling thetas per image and stage.
  std::vector<float> th(B * 3 * 6);
  for (std::size_t b = 0; b < B; ++b)
    for (int k = 0; k < 3; ++k) {
      const float* inv = o.theta_inv + (b * 3 + k) * 6;
      if (L.mode == Mode::Unwarp) std::copy(inv, inv + 6, th.data() + (b * 3 + k) * 6);
      else compose(inv, o.theta + (b * 3 + 2) * 6, th.data() + (b * 3 + k) * 6);
    }
  if (L.projection.empty()) {
    // (stage, channel within stage) of each output channel: grouped by stage, in
    // channel_index order within a stage (all channels when there is no subset).
    std::vector<std::pair<int, std::size_t>> src;
    std::size_t start[3] = {0, L.channels[0], L.channels[0] + L.channels[1]};
    for (int k = 0; k < 3; ++k) {
      if (L.channel_index.empty())
        for (std::size_t c = 0; c < L.channels[k]; ++c) src.emplace_back(k, c);
      else
        for (std::int64_t ci : L.channel_index)
          if (std::size_t(ci) >= start[k] && std::size_t(ci) < start[k] + L.channels[k])
            src.emplace_back(k, std::size_t(ci) - start[k]);
    }
    std::vector<float> raw(L.aggregate ? B * P * D : 0);
    float* dst = L.aggregate ? raw.data() : features;
    // ~2 ns per value: below ~1M values a thread start costs more than it saves
    if (B * P * D < (std::size_t(1) << 20)) threads = 1;
    parallel_for(B * P, threads, 64, [&](std::size_t i0, std::size_t i1) {
      for (std::size_t b = i0 / P; b * P < i1; ++b) {
        std::size_t p0 = std::max(i0, b * P) - b * P, p1 = std::min(i1, (b + 1) * P) - b * P;
        gather_cells(L, o, th.data(), b, src, p0, p1, dst + b * P * D);
      }
    });
    if (L.aggregate)
      parallel_for(B * P, threads, 64, [&](std::size_t i0, std::size_t i1) {
        for (std::size_t b = i0 / P; b * P < i1; ++b) {
          std::size_t p0 = std::max(i0, b * P) - b * P, p1 = std::min(i1, (b + 1) * P) - b * P;
          aggregate_rows(raw.data() + b * P * D, gh, gw, D, p0, p1, features + b * P * D);
        }
      });
    return;
  }
  std::vector<float> planes(B * D * P, 0.f);
  {
    // Project each stage at its own resolution, sample the D planes, sum the stages.
    parallel_for(B * D, threads, 8, [&](std::size_t i0, std::size_t i1) {
      std::vector<float> proj, grid(P);
      for (std::size_t i = i0; i < i1; ++i) {
        std::size_t b = i / D, d = i % D, start = 0;
        float* acc = planes.data() + i * P;
        for (int k = 0; k < 3; ++k) {
          std::size_t hw = o.height[k] * o.width[k];
          proj.assign(hw, 0.f);
          const float* f = o.feat[k] + b * o.channels[k] * hw;
          for (std::size_t c = 0; c < o.channels[k]; ++c) {
            const float wgt = L.projection[(start + c) * D + d];
            const float* pl = f + c * hw;
            for (std::size_t q = 0; q < hw; ++q) proj[q] += wgt * pl[q];
          }
          start += o.channels[k];
          sample_plane(proj.data(), o.height[k], o.width[k], th.data() + (b * 3 + k) * 6, gh, gw, grid.data());
          for (std::size_t q = 0; q < P; ++q) acc[q] += grid[q];
        }
      }
    });
  }
  // Aggregate (optional) and transpose [B, D, P] -> [B, P, D].
  parallel_for(B, threads, 1, [&](std::size_t b0, std::size_t b1) {
    std::vector<float> tmp(L.aggregate ? P : 0);
    for (std::size_t b = b0; b < b1; ++b) {
      float* pb = planes.data() + b * D * P;
      float* fb = features + b * P * D;
      for (std::size_t d = 0; d < D; ++d) {
        const float* src = pb + d * P;
        if (L.aggregate) {
          aggregate_plane(src, gh, gw, tmp.data());
          src = tmp.data();
        }
        for (std::size_t p = 0; p < P; ++p) fb[p * D + d] = src[p];
      }
    }
  });
}

}  // namespace careg
