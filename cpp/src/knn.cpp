// Exact blocked kNN: d(q, m) = |q|^2 + |m|^2 - 2 q.m with the dot products from
// a 6x16 register-tiled microkernel over a bank packed into 16-row panels
// (the GEMM layout), then the k winners recomputed exactly.
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "careg/error.h"
#include "careg/knn.h"
#include "careg/parallel.h"
#include "careg/topk.h"

namespace careg {
namespace {

constexpr std::size_t MR = 6, NR = 16;
typedef float v8 __attribute__((vector_size(32)));

inline v8 load8(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Bank rows transposed into panels of NR: panel[pi][d][jj] (zero padded).
std::vector<float> pack_bank(const float* bank, std::size_t M, std::size_t D) {
  std::size_t panels = (M + NR - 1) / NR;
  std::vector<float> out(panels * D * NR, 0.f);
  for (std::size_t m = 0; m < M; ++m) {
    float* dst = out.data() + (m / NR) * D * NR + (m % NR);
    for (std::size_t d = 0; d < D; ++d) dst[d * NR] = bank[m * D + d];
  }
  return out;
}

// dots[r][jj] = q_r . bank_jj for MR query rows (rows past `mr` repeat the last).
void microkernel(const float* q, std::size_t mr, std::size_t D, const float* panel,
                 float dots[MR][NR]) {
  const float* qr[MR];
  for (std::size_t r = 0; r < MR; ++r) qr[r] = q + std::min(r, mr - 1) * D;
  v8 c[MR][2] = {};
  for (std::size_t d = 0; d < D; ++d) {
    v8 b0 = load8(panel + d * NR), b1 = load8(panel + d * NR + 8);
    for (std::size_t r = 0; r < MR; ++r) {
      float a = qr[r][d];
      c[r][0] += a * b0;
      c[r][1] += a * b1;
    }
  }
  for (std::size_t r = 0; r < MR; ++r) {
    std::memcpy(dots[r], &c[r][0], sizeof(v8));
    std::memcpy(dots[r] + 8, &c[r][1], sizeof(v8));
  }
}

struct Bank {
  const float* rows;
  std::size_t M, D;
  std::vector<float> packed, norms;
};

// Queries [q0, q1): tiles of QB rows stay in L2 while every panel streams past.
void search_range(const Bank& bk, const float* q, std::size_t q0, std::size_t q1,
                  std::size_t k, float* sqdist, std::int64_t* idx) {
  const std::size_t D = bk.D, QB = 96, panels = (bk.M + NR - 1) / NR;
  std::vector<float> qn(QB);
  float dots[MR][NR];
  for (std::size_t t0 = q0; t0 < q1; t0 += QB) {
    std::size_t t1 = std::min(q1, t0 + QB);
    for (std::size_t n = t0; n < t1; ++n) {
      TopK{sqdist + n * k, idx + n * k, k}.reset();
      float s = 0.f;
      for (std::size_t j = 0; j < D; ++j) s += q[n * D + j] * q[n * D + j];
      qn[n - t0] = s;
    }
    for (std::size_t pi = 0; pi < panels; ++pi) {
      const float* panel = bk.packed.data() + pi * D * NR;
      std::size_t nr = std::min(NR, bk.M - pi * NR);
      for (std::size_t n = t0; n < t1; n += MR) {
        std::size_t mr = std::min(MR, t1 - n);
        microkernel(q + n * D, mr, D, panel, dots);
        for (std::size_t r = 0; r < mr; ++r) {
          TopK top{sqdist + (n + r) * k, idx + (n + r) * k, k};
          float base = qn[n + r - t0];
          for (std::size_t jj = 0; jj < nr; ++jj) {
            std::size_t m = pi * NR + jj;
            float d = base + bk.norms[m] - 2.f * dots[r][jj];
            d = d < 0.f ? 0.f : d;  // rounding can go below 0; NaN stays NaN and never enters
            top.push(d, static_cast<std::int64_t>(m));
          }
        }
      }
    }
  }
}

// The norm trick loses digits when q is close to m: recompute the winners exactly.
void refine(const Bank& bk, const float* qrow, std::size_t k, float* d, std::int64_t* id) {
  std::vector<std::pair<float, std::int64_t>> w;
  for (std::size_t r = 0; r < k; ++r)
    if (id[r] >= 0) w.emplace_back(exact_sqdist(qrow, bk.rows + id[r] * bk.D, bk.D), id[r]);
  std::sort(w.begin(), w.end());
  for (std::size_t r = 0; r < w.size(); ++r) {
    d[r] = w[r].first;
    id[r] = w[r].second;
  }
}

}  // namespace

void knn(const float* q, std::size_t N, const float* bank, std::size_t M, std::size_t D,
         std::size_t k, float* sqdist, std::int64_t* idx, int threads) {
  CAREG_CHECK(k >= 1 && k <= M, "knn: k must be in [1, bank size " << M << "], got " << k);
  resolve_threads(threads);
  if (N == 0) return;
  Bank bk{bank, M, D, pack_bank(bank, M, D), std::vector<float>(M)};
  const float inf = std::numeric_limits<float>::infinity();
  for (std::size_t m = 0; m < M; ++m) {
    float s = 0.f;
    for (std::size_t j = 0; j < D; ++j) s += bank[m * D + j] * bank[m * D + j];
    // A non-finite bank row must never win: +inf norm makes its distance inf/NaN.
    bk.norms[m] = all_finite(bank + m * D, D) ? s : inf;
  }
  parallel_for(N, threads, 4 * MR, [&](std::size_t n0, std::size_t n1) {
    search_range(bk, q, n0, n1, k, sqdist, idx);
    for (std::size_t n = n0; n < n1; ++n) {
      float* d = sqdist + n * k;
      std::int64_t* id = idx + n * k;
      if (!all_finite(q + n * D, D)) {
        std::fill(d, d + k, std::numeric_limits<float>::quiet_NaN());
        std::fill(id, id + k, std::int64_t(-1));
      } else {
        refine(bk, q + n * D, k, d, id);
      }
    }
  });
}

}  // namespace careg
