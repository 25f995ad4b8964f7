#include "careg/fit.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "careg/error.h"
#include "careg/parallel.h"

namespace careg {
namespace {

typedef double v4d __attribute__((vector_size(32)));

// a.b in double, 4 lanes at a time (GCC keeps a scalar reduction scalar).
inline double dotd(const double* a, const double* b, std::size_t n) {
  v4d acc = {};
  std::size_t k = 0;
  for (; k + 4 <= n; k += 4) {
    v4d va, vb;
    std::memcpy(&va, a + k, sizeof va);
    std::memcpy(&vb, b + k, sizeof vb);
    acc += va * vb;
  }
  double s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  for (; k < n; ++k) s += a[k] * b[k];
  return s;
}

// Lower Cholesky in place of a (n x n, row-major, lower triangle used); false if
// not positive definite.
bool cholesky(std::vector<double>& a, std::size_t n) {
  for (std::size_t j = 0; j < n; ++j) {
    const double* rj = &a[j * n];
    double s = a[j * n + j] - dotd(rj, rj, j);
    if (!(s > 0.0) || !std::isfinite(s)) return false;
    double d = std::sqrt(s);
    a[j * n + j] = d;
    for (std::size_t i = j + 1; i < n; ++i) a[i * n + j] = (a[i * n + j] - dotd(&a[i * n], rj, j)) / d;
  }
  return true;
}

// Inverse of a lower-triangular c (n x n) into m (lower), row by row: row i of the
// inverse is -(1/c_ii) sum_k<i c_ik m_k (rows of m, contiguous axpys).
void lower_inverse(const std::vector<double>& c, std::size_t n, std::vector<double>& m) {
  std::fill(m.begin(), m.end(), 0.0);
  for (std::size_t i = 0; i < n; ++i) {
    double* mi = &m[i * n];
    for (std::size_t k = 0; k < i; ++k) {
      const double cik = c[i * n + k];
      const double* mk = &m[k * n];
      for (std::size_t j = 0; j <= k; ++j) mi[j] += cik * mk[j];
    }
    const double inv = 1.0 / c[i * n + i];
    for (std::size_t j = 0; j < i; ++j) mi[j] *= -inv;
    mi[i] = inv;
  }
}

typedef float v8 __attribute__((vector_size(32)));

// a.b in float: 8 lanes at a time (the dimension is a multiple of 8 in practice: 64).
inline float dot(const float* a, const float* b, std::size_t k) {
  std::size_t j = 0;
  float s = 0.f;
  if (k >= 8) {
    v8 acc = {};
    for (; j + 8 <= k; j += 8) {
      v8 va, vb;
      std::memcpy(&va, a + j, sizeof va);
      std::memcpy(&vb, b + j, sizeof vb);
      acc += va * vb;
    }
    for (int l = 0; l < 8; ++l) s += acc[l];
  }
  for (; j < k; ++j) s += a[j] * b[j];
  return s;
}

}  // namespace

void gaussian_factor(const float* x, std::size_t N, std::size_t P, std::size_t D, double eps, float* mean,
                     float* factor, int threads) {
  CAREG_CHECK(N >= 1 && D >= 1, "gaussian_factor: need at least one sample and one dimension");
  CAREG_CHECK(eps > 0.0 && std::isfinite(eps), "gaussian_factor: eps must be > 0, got " << eps);
  const std::size_t T = D * (D + 1) / 2;
  parallel_for(P, threads, 8, [&](std::size_t p0, std::size_t p1) {
    std::vector<double> mu(D), xc(N * D), cov(D * D), rev(D * D), inv(D * D);
    for (std::size_t p = p0; p < p1; ++p) {
      std::fill(mu.begin(), mu.end(), 0.0);
      for (std::size_t n = 0; n < N; ++n)
        for (std::size_t d = 0; d < D; ++d) mu[d] += x[(n * P + p) * D + d];
      for (std::size_t d = 0; d < D; ++d) mu[d] /= double(N);
      for (std::size_t n = 0; n < N; ++n)
        for (std::size_t d = 0; d < D; ++d) xc[n * D + d] = double(x[(n * P + p) * D + d]) - mu[d];
      std::fill(cov.begin(), cov.end(), 0.0);
      for (std::size_t n = 0; n < N; ++n) {  // rank-1 updates of the lower triangle
        const double* a = &xc[n * D];
        for (std::size_t i = 0; i < D; ++i) {
          double ai = a[i];
          double* row = &cov[i * D];
          for (std::size_t j = 0; j <= i; ++j) row[j] += ai * a[j];
        }
      }
      const double den = double(std::max<std::size_t>(N - 1, 1));
      for (std::size_t i = 0; i < D; ++i)  // reversed: rev[i][j] = S[D-1-i][D-1-j], lower part
        for (std::size_t j = 0; j <= i; ++j)
          rev[i * D + j] = cov[(D - 1 - j) * D + (D - 1 - i)] / den + (i == j ? eps : 0.0);
      CAREG_CHECK(cholesky(rev, D), "gaussian_factor: the covariance at position " << p
                                        << " is not positive definite (non-finite features?)");
      lower_inverse(rev, D, inv);
      float* f = factor + p * T;
      for (std::size_t i = 0; i < D; ++i)  // L[i][j] = inv[D-1-j][D-1-i]
        for (std::size_t j = 0; j <= i; ++j) f[i * (i + 1) / 2 + j] = float(inv[(D - 1 - j) * D + (D - 1 - i)]);
      for (std::size_t d = 0; d < D; ++d) mean[p * D + d] = float(mu[d]);
    }
  });
}

float greedy_coreset(const float* z, std::size_t n, std::size_t k, std::size_t m, std::size_t first,
                     std::int64_t* idx) {
  CAREG_CHECK(n >= 1 && m >= 1 && m <= n && first < n, "greedy_coreset: need 1 <= m <= n and first < n");
  std::vector<float> sq(n), mind(n, std::numeric_limits<float>::infinity());
  for (std::size_t i = 0; i < n; ++i) {
    float s = 0.f;
    sq[i] = s + dot(z + i * k, z + i * k, k);
  }
  idx[0] = std::int64_t(first);
  for (std::size_t t = 0; t < m; ++t) {
    const std::size_t c = std::size_t(idx[t]);
    const float* zc = z + c * k;
    const float sc = sq[c];
    std::size_t best = 0;
    float best_d = -1.f;
    for (std::size_t i = 0; i < n; ++i) {
      float d = sq[i] - 2.0f * dot(z + i * k, zc, k) + sc;
      float v = i == c ? 0.f : std::min(mind[i], d);
      mind[i] = v;
      if (v > best_d) best_d = v, best = i;
    }
    if (t + 1 < m) idx[t + 1] = std::int64_t(best);
  }
  float mx = 0.f;
  for (float v : mind) mx = std::max(mx, v);
  return std::sqrt(std::max(mx, 0.f));
}

}  // namespace careg
