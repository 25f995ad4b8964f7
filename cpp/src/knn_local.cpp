// Registered-local kNN: after registration a patch only needs to be compared
// with bank items enrolled near the same grid cell, which is both faster and
// stricter than a global search.
#include <algorithm>
#include <limits>
#include <vector>

#include "careg/error.h"
#include "careg/knn.h"
#include "careg/parallel.h"
#include "careg/topk.h"

namespace careg {

void knn_local(const float* q, std::size_t B, std::size_t P, std::size_t D,
               const float* bank, std::size_t M, const std::int32_t* bank_pos,
               std::size_t grid_h, std::size_t grid_w, std::size_t radius, std::size_t k,
               float* sqdist, std::int64_t* idx, int threads) {
  CAREG_CHECK(grid_h * grid_w == P, "knn_local: grid_h*grid_w (" << grid_h << "*" << grid_w
                                        << ") must equal the number of positions " << P);
  CAREG_CHECK(k >= 1, "knn_local: k must be >= 1");
  resolve_threads(threads);
  // Bucket the bank by cell (counting sort) so a position gathers its candidates directly.
  std::vector<std::size_t> start(P + 1, 0), order(M);
  for (std::size_t m = 0; m < M; ++m) {
    CAREG_CHECK(bank_pos[m] >= 0 && std::size_t(bank_pos[m]) < P,
                "knn_local: bank_pos[" << m << "] = " << bank_pos[m] << " is outside the "
                                       << grid_h << "x" << grid_w << " grid");
    ++start[bank_pos[m] + 1];
  }
  for (std::size_t c = 0; c < P; ++c) start[c + 1] += start[c];
  std::vector<std::size_t> fill(start.begin(), start.end() - 1);
  for (std::size_t m = 0; m < M; ++m) order[fill[bank_pos[m]]++] = m;
  std::vector<char> bank_ok(M);
  for (std::size_t m = 0; m < M; ++m) bank_ok[m] = all_finite(bank + m * D, D);

  parallel_for(P, threads, 16, [&](std::size_t p0, std::size_t p1) {
    std::vector<std::size_t> cand;
    for (std::size_t p = p0; p < p1; ++p) {
      std::size_t r = p / grid_w, c = p % grid_w;
      std::size_t r0 = r > radius ? r - radius : 0, r1 = std::min(grid_h - 1, r + radius);
      std::size_t c0 = c > radius ? c - radius : 0, c1 = std::min(grid_w - 1, c + radius);
      cand.clear();
      for (std::size_t rr = r0; rr <= r1; ++rr)
        for (std::size_t cell = rr * grid_w + c0; cell <= rr * grid_w + c1; ++cell)
          for (std::size_t s = start[cell]; s < start[cell + 1]; ++s) cand.push_back(order[s]);
      std::sort(cand.begin(), cand.end());  // ties resolve to the lower bank index
      for (std::size_t b = 0; b < B; ++b) {
        const float* qr = q + (b * P + p) * D;
        TopK top{sqdist + (b * P + p) * k, idx + (b * P + p) * k, k};
        top.reset();
        if (!all_finite(qr, D)) {
          std::fill(top.d, top.d + k, std::numeric_limits<float>::quiet_NaN());
          continue;
        }
        for (std::size_t m : cand)
          if (bank_ok[m]) top.push(exact_sqdist(qr, bank + m * D, D), std::int64_t(m));
      }
    }
  });
}

}  // namespace careg
