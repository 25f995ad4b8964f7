// Scoring assembled features and the verdict: distances per estimator, the
// anomaly map, the image score per rule, and inspect() chaining assembly to it.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <locale>
#include <sstream>

#include "careg/affine.h"
#include "careg/anomaly_map.h"
#include "careg/error.h"
#include "careg/knn.h"
#include "careg/parallel.h"
#include "careg/road.h"

namespace careg {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// n = max(1, round(N * P / 100)) with ties to even, as Python's round() (same
// double arithmetic, so both agree on every N and P, ties included).
std::size_t top_count(std::size_t N, double percent) {
  double x = double(N) * percent / 100.0, n = std::floor(x), frac = x - n;
  if (frac > 0.5 || (frac == 0.5 && std::fmod(n, 2.0) != 0.0)) n += 1.0;
  return std::min(N, std::max<std::size_t>(1, static_cast<std::size_t>(n)));
}

// Mean of the n largest of map[0..N), summed in double. A NaN anywhere makes it NaN
// (nth_element needs NaN-free input: NaN breaks its strict weak ordering).
float top_mean(const float* map, std::size_t N, std::size_t n, std::vector<float>& scratch) {
  for (std::size_t i = 0; i < N; ++i)
    if (std::isnan(map[i])) return kNaN;
  scratch.assign(map, map + N);
  auto first = scratch.begin() + static_cast<std::ptrdiff_t>(N - n);
  if (n < N) std::nth_element(scratch.begin(), first, scratch.end());
  double sum = 0.0;
  for (auto it = first; it != scratch.end(); ++it) sum += *it;
  return static_cast<float>(sum / double(n));
}

// digits[.digits]: the only spelling of P both readers (this one and Python's) accept.
// float() and strtod() also take blanks, signs, exponents, hex or "inf" -- each with
// its own quirks -- and the two readers must refuse exactly the same files.
bool plain_decimal(const std::string& s) {
  std::size_t i = 0, digits = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++digits;
  if (digits == 0) return false;
  if (i < s.size() && s[i] == '.') {
    std::size_t frac = 0;
    for (++i; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) ++frac;
    if (frac == 0) return false;
  }
  return i == s.size();
}

double l2(const float* a, const float* b, std::size_t D) {
  double s = 0.0;
  for (std::size_t j = 0; j < D; ++j) {
    double t = double(a[j]) - double(b[j]);
    s += t * t;
  }
  return std::sqrt(s);
}

// Nearest bank row per position: global, or registered-local with the whole bank
// for cells whose window holds no bank patch. dist = sqrt(sqdist).
void patchcore_distances(const Scorer& s, bool local, std::size_t radius, const float* x, std::size_t B,
                         float* dist, std::vector<std::int64_t>& nn, int threads) {
  const std::size_t P = s.positions(), D = s.dim, M = s.bank_size();
  nn.assign(B * P, -1);
  if (!local) {
    knn(x, B * P, s.bank.data(), M, D, 1, dist, nn.data(), threads);
  } else {
    knn_local(x, B, P, D, s.bank.data(), M, s.bank_pos.data(), s.grid_h, s.grid_w, radius, 1, dist,
              nn.data(), threads);
    std::vector<std::size_t> empty;
    for (std::size_t i = 0; i < B * P; ++i)
      if (nn[i] < 0) empty.push_back(i);
    if (!empty.empty()) {
      std::vector<float> q(empty.size() * D), d(empty.size());
      std::vector<std::int64_t> id(empty.size());
      for (std::size_t e = 0; e < empty.size(); ++e) std::copy(x + empty[e] * D, x + (empty[e] + 1) * D, q.data() + e * D);
      knn(q.data(), empty.size(), s.bank.data(), M, D, 1, d.data(), id.data(), threads);
      for (std::size_t e = 0; e < empty.size(); ++e) {
        dist[empty[e]] = d[e];
        nn[empty[e]] = id[e];
      }
    }
  }
  for (std::size_t i = 0; i < B * P; ++i) dist[i] = std::sqrt(dist[i]);  // NaN stays NaN
}

// PatchCore Eq. 7: s* = the largest patch distance, m* its nearest bank row,
// N_b(m*) the reweight_k nearest bank rows of m* (itself first);
// score = (1 - softmax(|x* - m|, m in N_b(m*))[m*]) * s*, in double.
float reweighted(const Scorer& s, const float* x, const float* dist, const std::int64_t* nn) {
  const std::size_t P = s.positions(), D = s.dim, M = s.bank_size();
  std::size_t worst = 0;
  for (std::size_t p = 0; p < P; ++p) {
    if (std::isnan(dist[p])) return kNaN;
    if (dist[p] > dist[worst]) worst = p;
  }
  if (!std::isfinite(dist[worst]) || nn[worst] < 0) return kNaN;
  const float* xs = x + worst * D;
  const float* ms = s.bank.data() + std::size_t(nn[worst]) * D;
  std::size_t k = std::min(s.reweight_k, M);
  std::vector<float> nd(k);
  std::vector<std::int64_t> ni(k);
  knn(ms, 1, s.bank.data(), M, D, k, nd.data(), ni.data(), 1);
  std::vector<double> logits{l2(xs, ms, D)};
  for (std::size_t j = 1; j < k; ++j)
    logits.push_back(ni[j] >= 0 ? l2(xs, s.bank.data() + std::size_t(ni[j]) * D, D) : double(kNaN));
  double top = *std::max_element(logits.begin(), logits.end()), sum = 0.0;
  for (double l : logits) sum += std::exp(l - top);
  double w = 1.0 - std::exp(logits[0] - top) / sum;
  return float(w * double(dist[worst]));
}

void check_features(const float* x, std::size_t B, std::size_t P, std::size_t D) {
  for (std::size_t b = 0; b < B; ++b) {
    std::size_t bad = 0;
    for (std::size_t i = 0; i < P * D; ++i) bad += !std::isfinite(x[b * P * D + i]);
    CAREG_CHECK(bad == 0, "features[" << b << "]: " << bad << " non-finite value(s) (NaN/inf); "
                                      << "the encoder output was broken");
  }
}

}  // namespace

bool parse_rule(const std::string& s, Rule& rule, double& percent) {
  if (s == "max") return rule = Rule::Max, percent = 0.0, true;
  if (s == "mean") return rule = Rule::Mean, percent = 100.0, true;
  if (s.size() < 5 || s.compare(0, 3, "top") != 0 || s.back() != '%') return false;
  std::string num = s.substr(3, s.size() - 4);
  if (!plain_decimal(num)) return false;
  std::istringstream in(num);  // classic locale: a host's LC_NUMERIC must not change the rule
  in.imbue(std::locale::classic());
  double p = -1.0;
  in >> p;
  if (!in || !(p > 0.0 && p <= 100.0)) return false;
  rule = Rule::Top;
  percent = p;
  return true;
}

const std::vector<EstimatorRow>& estimator_rows() {
  static const std::vector<EstimatorRow> rows = {
      {"padim", Estimator::PaDiM, Kernel::Mahalanobis},
      {"orthoad", Estimator::OrthoAD, Kernel::Mahalanobis},  // PaDiM's kernel on projected features
      {"patchcore", Estimator::PatchCore, Kernel::NearestBank},
  };
  return rows;
}

const EstimatorRow* estimator_row(const std::string& name) {
  for (const EstimatorRow& r : estimator_rows())
    if (name == r.name) return &r;
  return nullptr;
}

Kernel kernel_of(Estimator e) {
  for (const EstimatorRow& r : estimator_rows())
    if (r.estimator == e) return r.kernel;
  CAREG_CHECK(false, "estimator " << int(e) << " has no row in estimator_rows()");
  return Kernel::Mahalanobis;  // not reached
}

std::string estimator_names() {
  const auto& rows = estimator_rows();
  std::string out;
  for (std::size_t i = 0; i < rows.size(); ++i)
    out += std::string(i == 0 ? "" : i + 1 == rows.size() ? " or " : ", ") + rows[i].name;
  return out;
}

void Scorer::validate() const {
  const std::size_t P = positions();
  CAREG_CHECK(P > 0 && grid_h <= 65536 && grid_w <= 65536, "profile grid " << grid_h << "x" << grid_w << " is empty");
  CAREG_CHECK(image_h > 0 && image_w > 0 && image_h <= 65536 && image_w <= 65536,
              "profile image size " << image_h << "x" << image_w << " must be in [1, 65536]");
  CAREG_CHECK(std::isfinite(sigma) && sigma >= 0.f && sigma <= 1000.f, "profile sigma must be in [0, 1000], got " << sigma);
  CAREG_CHECK(rule != Rule::Top || (percent > 0.0 && percent <= 100.0), "image score top<P>% needs 0 < P <= 100");
  CAREG_CHECK(dim > 0, "profile feature dimension D must be >= 1");
  if (kernel_of(estimator) == Kernel::NearestBank) {
    CAREG_CHECK(!bank.empty() && bank.size() % dim == 0,
                "profile tensor bank must be a non-empty [M, D] with D = " << dim << ", got " << bank.size() << " values");
    CAREG_CHECK(bank_pos.size() == bank_size(),
                "profile tensor bank_pos must have one entry per bank row (" << bank_size() << "), got " << bank_pos.size());
    for (std::size_t m = 0; m < bank_pos.size(); ++m)
      CAREG_CHECK(bank_pos[m] >= 0 && std::size_t(bank_pos[m]) < P,
                  "profile tensor bank_pos[" << m << "] = " << bank_pos[m] << " is outside the " << grid_h << "x"
                                             << grid_w << " grid");
    CAREG_CHECK(reweight_k >= 1 && reweight_k <= 1000000, "profile estimator_params.reweight_k must be >= 1");
    CAREG_CHECK(radius <= 65536, "profile estimator_params.radius must be in [0, 65536]");
  } else {
    CAREG_CHECK(mean.size() == P * dim, "profile tensor mean must be [P, D] = [" << P << ", " << dim << "], got "
                                                                               << mean.size() << " values");
    std::size_t T = P * packed_size(dim), have = factor32.empty() ? factor16.size() : factor32.size();
    CAREG_CHECK(have == T && (factor32.empty() || factor16.empty()),
                "profile tensor precision_factor must be [P, D(D+1)/2] = [" << P << ", " << packed_size(dim) << "], got "
                                                                            << have << " values");
  }
}

void score(const Scorer& s, const float* x, std::size_t B, const float* theta_inv3, Scores& out,
           int threads, const RoadOptions* opt) {
  resolve_threads(threads);
  s.validate();
  bool local = s.local;
  std::size_t radius = s.radius;
  if (opt) {
    CAREG_CHECK(opt->search >= -1 && opt->search <= 1, "search override must be -1 (profile), 0 (global) or 1 (local)");
    CAREG_CHECK(opt->radius >= -1 && opt->radius <= 65536, "radius override must be -1 (profile) or in [0, 65536]");
    if (opt->search >= 0) local = opt->search == 1;
    if (opt->radius >= 0) radius = std::size_t(opt->radius);
  }
  const std::size_t P = s.positions(), D = s.dim, N = s.image_h * s.image_w;
  CAREG_CHECK(B <= (std::size_t(1) << 20), "batch " << B << " is unreasonably large");
  out.dist.assign(B * P, 0.f);
  out.maps.assign(B * N, 0.f);
  out.scores.assign(B, 0.f);
  if (B == 0) return;
  CAREG_CHECK(x, "features must not be NULL");
  check_features(x, B, P, D);
  auto t = Clock::now();
  std::vector<std::int64_t> nn;
  if (kernel_of(s.estimator) == Kernel::NearestBank) {
    patchcore_distances(s, local, radius, x, B, out.dist.data(), nn, threads);
  } else {
    bool half = s.factor32.empty();
    mahalanobis(x, B, P, D, s.mean.data(), half ? static_cast<const void*>(s.factor16.data()) : s.factor32.data(),
                half ? Storage::F16 : Storage::F32, out.dist.data(), threads);
  }
  out.ms_score = ms_since(t);
  t = Clock::now();
  anomaly_map(out.dist.data(), B, s.grid_h, s.grid_w, theta_inv3, s.image_h, s.image_w, s.sigma, out.maps.data(),
              out.scores.data(), threads);
  if (s.rule == Rule::Max && kernel_of(s.estimator) == Kernel::NearestBank) {
    for (std::size_t b = 0; b < B; ++b) out.scores[b] = reweighted(s, x + b * P * D, out.dist.data() + b * P, nn.data() + b * P);
  } else if (s.rule != Rule::Max) {
    const std::size_t n = top_count(N, s.percent);
    int nt = B * N < (std::size_t(1) << 18) ? 1 : threads;  // below ~256k values a thread costs more than it saves
    parallel_for(B, nt, 1, [&](std::size_t b0, std::size_t b1) {
      std::vector<float> scratch;
      for (std::size_t b = b0; b < b1; ++b) out.scores[b] = top_mean(out.maps.data() + b * N, N, n, scratch);
    });
  }
  out.ms_map = ms_since(t);
}

bool verdict(float score, float threshold, std::string& reason) {
  std::ostringstream os;
  os.imbue(std::locale::classic());
  if (!std::isfinite(score)) {
    os << "image score is " << (std::isnan(score) ? "NaN" : "inf")
       << ": non-finite distances or map values (profile tensors with NaN/inf, or features so large they "
          "overflow); a score that cannot be trusted is a defect";
    reason = os.str();
    return true;
  }
  if (!std::isfinite(threshold)) {
    reason = "the threshold is not finite; a score cannot be judged against it, so this is a defect";
    return true;
  }
  bool defect = score > threshold;
  os << "score " << score << (defect ? " > " : " <= ") << "threshold " << threshold;
  reason = os.str();
  return defect;
}

void inspect(const Layout& layout, const Scorer& scorer, const Outputs& out, float threshold,
             Inspection& r, int threads, const RoadOptions* opt) {
  layout.validate();
  scorer.validate();
  CAREG_CHECK(layout.dim() == scorer.dim,
              "profile: assembly gives D = " << layout.dim() << " features (channel_index/projection) but the "
                                             << "estimator tensors have D = " << scorer.dim);
  CAREG_CHECK(layout.grid_h() == scorer.grid_h && layout.grid_w() == scorer.grid_w,
              "profile: features.input_size / grid_stride give a " << layout.grid_h() << "x" << layout.grid_w()
                                                                   << " grid but grid_h x grid_w is " << scorer.grid_h
                                                                   << "x" << scorer.grid_w);
  auto t = Clock::now();
  std::vector<float> feats(out.batch * layout.positions() * layout.dim());
  assemble(layout, out, feats.data(), threads);
  r.ms_features = ms_since(t);
  std::vector<float> th3;
  if (layout.mode == Mode::Registered) {
    th3.resize(out.batch * 6);
    for (std::size_t b = 0; b < out.batch; ++b)
      std::copy(out.theta_inv + (b * 3 + 2) * 6, out.theta_inv + (b * 3 + 3) * 6, th3.data() + b * 6);
  }
  score(scorer, feats.data(), out.batch, th3.empty() ? nullptr : th3.data(), r, threads, opt);
  r.defect.assign(out.batch, 0);
  r.reason.assign(out.batch, std::string());
  for (std::size_t b = 0; b < out.batch; ++b) r.defect[b] = verdict(r.scores[b], threshold, r.reason[b]);
}

void resize_map(const float* map, std::size_t h, std::size_t w, std::size_t out_h, std::size_t out_w,
                float* out) {
  CAREG_CHECK(h > 0 && w > 0 && out_h > 0 && out_w > 0 && out_h <= 65536 && out_w <= 65536,
              "map size " << h << "x" << w << " -> " << out_h << "x" << out_w << " must be non-empty and <= 65536");
  for (std::size_t y = 0; y < out_h; ++y) affine_sample_row(map, h, w, nullptr, out_h, out_w, y, out + y * out_w);
}

}  // namespace careg
