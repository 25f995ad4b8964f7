// What each estimator needs from a profile (checked once at load), and the
// scoring of assembled features against it.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "careg/anomaly_map.h"
#include "careg/knn.h"
#include "careg/mahalanobis.h"
#include "careg/parallel.h"
#include "careg/profile.h"

namespace careg {
namespace {

[[noreturn]] void refuse(const std::string& where, const std::string& why) {
  throw FileError(FileProblem::Format, where + ": " + why);
}

const Tensor& need(const Profile& p, const std::string& name, const std::string& where) {
  const Tensor* t = p.tensor(name);
  if (!t) refuse(where, p.estimator + " profile lacks tensor '" + name + "'; re-enroll");
  return *t;
}

void expect_shape(const Tensor& t, const std::string& name, std::vector<std::size_t> shape,
                  const std::string& where) {
  if (t.shape != shape) {
    std::string want, got;
    for (auto s : shape) want += (want.empty() ? "" : ", ") + std::to_string(s);
    for (auto s : t.shape) got += (got.empty() ? "" : ", ") + std::to_string(s);
    refuse(where, "tensor '" + name + "' has shape [" + got + "], expected [" + want + "]");
  }
}

// n = max(1, round(N * P / 100)) with ties to even, the way Python's round()
// counts the top-P % in careg_edge.postprocess.image_scores (same double
// arithmetic, so both agree on every N and P, ties included).
std::size_t top_count(std::size_t N, double percent) {
  double x = double(N) * percent / 100.0, n = std::floor(x), frac = x - n;
  if (frac > 0.5 || (frac == 0.5 && std::fmod(n, 2.0) != 0.0)) n += 1.0;
  return std::min(N, std::max<std::size_t>(1, static_cast<std::size_t>(n)));
}

// Mean of the n largest of map[0..N), summed in double. A NaN anywhere makes it
// NaN: a corrupt input must not look good, and nth_element needs NaN-free input
// (NaN breaks its strict weak ordering). `scratch` is the caller's, reused per map.
float top_mean(const float* map, std::size_t N, std::size_t n, std::vector<float>& scratch) {
  for (std::size_t i = 0; i < N; ++i)
    if (std::isnan(map[i])) return std::numeric_limits<float>::quiet_NaN();
  scratch.assign(map, map + N);
  auto first = scratch.begin() + static_cast<std::ptrdiff_t>(N - n);
  if (n < N) std::nth_element(scratch.begin(), first, scratch.end());
  double sum = 0.0;
  for (auto it = first; it != scratch.end(); ++it) sum += *it;
  return static_cast<float>(sum / double(n));
}

}  // namespace

void Profile::validate(const std::string& where) {
  const std::size_t P = positions();
  if (sigma < 0.f || sigma > 1000.f) refuse(where, "metadata 'sigma' must be in [0, 1000]");
  if (estimator == "padim" || estimator == "orthoad") {
    const Tensor& mean = need(*this, "mean", where);
    if (mean.dtype != DType::F32 || mean.shape.size() != 2) refuse(where, "tensor 'mean' must be F32 [P, D]");
    dim_ = mean.shape[1];
    expect_shape(mean, "mean", {P, dim_}, where);
    const Tensor& f = need(*this, "precision_factor", where);
    if (f.dtype != DType::F32 && f.dtype != DType::F16) refuse(where, "tensor 'precision_factor' must be F32 or F16");
    expect_shape(f, "precision_factor", {P, packed_size(dim_)}, where);
  } else if (estimator == "patchcore") {
    const Tensor& bank = need(*this, "bank", where);
    if (bank.dtype != DType::F32 || bank.shape.size() != 2 || bank.shape[0] == 0)
      refuse(where, "tensor 'bank' must be a non-empty F32 [M, D]");
    dim_ = bank.shape[1];
    const Tensor& pos = need(*this, "bank_pos", where);
    if (pos.dtype != DType::I32) refuse(where, "tensor 'bank_pos' must be I32");
    expect_shape(pos, "bank_pos", {bank.shape[0]}, where);
    for (std::size_t m = 0; m < bank.shape[0]; ++m)
      if (pos.as<std::int32_t>()[m] < 0 || std::size_t(pos.as<std::int32_t>()[m]) >= P)
        refuse(where, "tensor 'bank_pos' has a cell outside the " + std::to_string(grid_h) + "x" +
                          std::to_string(grid_w) + " grid");
  } else {
    refuse(where, "unknown estimator '" + estimator + "' (expected padim, orthoad or patchcore)");
  }
  if (const Tensor* ci = tensor("channel_index")) {
    if (ci->dtype != DType::I64 || ci->shape.size() != 1) refuse(where, "tensor 'channel_index' must be I64 [D]");
    for (std::size_t i = 0; i < ci->shape[0]; ++i)
      if (ci->as<std::int64_t>()[i] < 0) refuse(where, "tensor 'channel_index' has a negative index");
  }
  if (const Tensor* pr = tensor("projection"))
    if (pr->dtype != DType::F32 || pr->shape.size() != 2 || pr->shape[1] != dim_)
      refuse(where, "tensor 'projection' must be F32 [Din, D]");
}

void Profile::score(const float* features, std::size_t B, std::size_t D, const float* theta_inv,
                    float* dist, float* maps, float* scores, int threads) const {
  const std::size_t P = positions();
  CAREG_CHECK(D == dim_, "features have D=" << D << " but the " << estimator << " profile expects D="
                                            << dim_ << " (assemble features per the profile's channel_index/projection)");
  if (estimator == "patchcore") {
    const Tensor& bank = *tensor("bank");
    std::vector<std::int64_t> idx(B * P);
    knn(features, B * P, bank.as<float>(), bank.shape[0], D, 1, dist, idx.data(), threads);
    for (std::size_t i = 0; i < B * P; ++i) dist[i] = std::sqrt(dist[i]);  // NaN stays NaN
  } else {
    const Tensor& f = *tensor("precision_factor");
    mahalanobis(features, B, P, D, tensor("mean")->as<float>(), f.storage.data(),
                f.dtype == DType::F16 ? Storage::F16 : Storage::F32, dist, threads);
  }
  anomaly_map(dist, B, grid_h, grid_w, theta_inv, image_h, image_w, sigma, maps, scores, threads);
  if (top_percent_ > 0.0) image_statistic(maps, B, scores, threads);
}

// Replaces the maxima anomaly_map wrote by the top-P % mean (P = 100: mean) of
// each map. One scratch copy per chunk of images: nothing shared between calls.
void Profile::image_statistic(const float* maps, std::size_t B, float* scores, int threads) const {
  const std::size_t N = image_h * image_w;
  CAREG_CHECK(N > 0 && top_percent_ > 0.0 && top_percent_ <= 100.0,
              "profile image score rule '" << image_score_ << "' needs a non-empty map and 0 < P <= 100");
  const std::size_t n = top_count(N, top_percent_);
  // Same cut-off as anomaly_map: below ~256k values a thread start costs more than it saves.
  int nt = B * N < (std::size_t(1) << 18) ? 1 : threads;
  parallel_for(B, nt, 1, [&](std::size_t b0, std::size_t b1) {
    std::vector<float> scratch;
    for (std::size_t b = b0; b < b1; ++b) scores[b] = top_mean(maps + b * N, N, n, scratch);
  });
}

}  // namespace careg
