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
  // Source of each output plane: (stage, channel within stage); projection: per stage.
  std::vector<float> planes(B * D * P, 0.f);
  if (L.projection.empty()) {
    std::vector<std::pair<int, std::size_t>> src;
    std::size_t start[3] = {0, L.channels[0], L.channels[0] + L.channels[1]};
    if (L.channel_index.empty()) {
      for (int k = 0; k < 3; ++k)
        for (std::size_t c = 0; c < L.channels[k]; ++c) src.emplace_back(k, c);
    } else {  // grouped by stage, in channel_index order within a stage
      for (int k = 0; k < 3; ++k)
        for (std::int64_t ci : L.channel_index)
          if (std::size_t(ci) >= start[k] && std::size_t(ci) < start[k] + L.channels[k])
            src.emplace_back(k, std::size_t(ci) - start[k]);
    }
    parallel_for(B * D, threads, 8, [&](std::size_t i0, std::size_t i1) {
      for (std::size_t i = i0; i < i1; ++i) {
        std::size_t b = i / D, j = i % D;
        int k = src[j].first;
        std::size_t hw = o.height[k] * o.width[k];
        const float* plane = o.feat[k] + (b * o.channels[k] + src[j].second) * hw;
        sample_plane(plane, o.height[k], o.width[k], th.data() + (b * 3 + k) * 6, gh, gw,
                     planes.data() + i * P);
      }
    });
  } else {
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
