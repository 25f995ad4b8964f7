// Built with -fsanitize=address,undefined by tests/test_core_capi.py:
//   careg_core_test PROFILE.careg
// 1. the profile loads and scores like a naive recomputation,
// 2. 4 threads scoring the same profile at once give identical results,
// 3. thousands of truncated / bit-flipped / length-lying variants are refused
//    (or, when a mutation is harmless and re-checksummed, load and score) without
//    a crash or an out-of-bounds read (the sanitizers abort on those).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "careg/crc32.h"
#include "careg_c.h"

static int failures = 0;
#define EXPECT(cond, ...)                                   \
  do {                                                      \
    if (!(cond)) {                                          \
      std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);                    \
      std::fprintf(stderr, "\n");                           \
      ++failures;                                           \
    }                                                       \
  } while (0)

static std::vector<float> score_once(const careg_profile* p, const std::vector<float>& x, size_t B,
                                     int threads) {
  size_t gh, gw;
  careg_profile_grid(p, &gh, &gw);
  careg_result* r = nullptr;
  careg_status st = careg_score(p, x.data(), B, gh * gw, careg_profile_feature_dim(p), nullptr, threads, &r);
  EXPECT(st == CAREG_OK, "careg_score: %s", careg_last_error());
  if (st != CAREG_OK) return {};
  size_t h, w;
  const float* maps = careg_result_maps(r, &h, &w);
  std::vector<float> out(careg_result_distances(r), careg_result_distances(r) + B * gh * gw);
  out.insert(out.end(), maps, maps + B * h * w);
  for (size_t b = 0; b < B; ++b) out.push_back(careg_result_score(r, b));
  careg_free(r);
  return out;
}

// Re-seal a mutated file so the mutation reaches the checks behind the CRC.
static void reseal(std::vector<unsigned char>& f) {
  if (f.size() < 8) return;
  unsigned long long hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | f[i];
  if (hlen > f.size() - 8) return;
  std::string header(f.begin() + 8, f.begin() + 8 + long(hlen));
  size_t at = header.find("\"checksum\":\"");
  if (at == std::string::npos || at + 12 + 8 > header.size()) return;
  at += 8 + 12;
  std::memcpy(&f[at], "00000000", 8);
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", careg::crc32(f.data(), f.size()));
  std::memcpy(&f[at], hex, 8);
}

static void fuzz(const std::vector<unsigned char>& good) {
  std::mt19937_64 rng(1234);
  int cases = 0, refused = 0;
  auto try_load = [&](const std::vector<unsigned char>& f, bool expect_refusal) {
    careg_profile* p = nullptr;
    careg_status st = careg_profile_load_memory(f.data(), f.size(), &p);
    ++cases;
    if (st != CAREG_OK) {
      ++refused;
      EXPECT(std::strlen(careg_last_error()) > 0, "refusal without a message");
      return;
    }
    EXPECT(!expect_refusal, "accepted a corrupt file (case %d)", cases);
    std::vector<float> x(careg_profile_feature_dim(p) * 4096, 0.5f);
    size_t gh, gw;
    careg_profile_grid(p, &gh, &gw);
    if (gh * gw * careg_profile_feature_dim(p) <= x.size()) score_once(p, x, 1, 1);
    careg_free(p);
  };
  for (size_t n = 0; n < good.size(); n += 1 + good.size() / 1500)  // truncations
    try_load(std::vector<unsigned char>(good.begin(), good.begin() + long(n)), true);
  for (int i = 0; i < 1500; ++i) {  // bit flips, checksum left stale: must refuse
    auto f = good;
    f[rng() % f.size()] ^= static_cast<unsigned char>(1u << (rng() % 8));
    try_load(f, true);
  }
  unsigned long long hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | good[i];
  for (int i = 0; i < 1500; ++i) {  // header digits / lengths rewritten and re-sealed
    auto f = good;
    if (i % 3 == 0) {
      unsigned long long lie = rng() % (good.size() * 2);
      for (int k = 0; k < 8; ++k) f[k] = static_cast<unsigned char>(lie >> (8 * k));
    } else {
      for (int k = 0; k < 1 + i % 3; ++k) {
        size_t at = 8 + rng() % hlen;
        unsigned char c = f[at];
        if (c >= '0' && c <= '9') f[at] = static_cast<unsigned char>('0' + rng() % 10);
        else if (i % 2) f[at] = static_cast<unsigned char>("0123456789[]{},:\"9"[rng() % 18]);
      }
    }
    reseal(f);
    try_load(f, false);
  }
  std::printf("fuzz: %d cases, %d refused, 0 crashes\n", cases, refused);
  EXPECT(cases > 3000, "too few fuzz cases");
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s PROFILE.careg\n", argv[0]);
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  std::vector<unsigned char> good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  careg_profile* p = nullptr;
  EXPECT(careg_profile_load(argv[1], &p) == CAREG_OK, "load: %s", careg_last_error());
  if (!p) return 1;
  std::printf("image_score: %s\n", careg_profile_image_score(p));
  size_t gh, gw, D = careg_profile_feature_dim(p), B = 3;
  careg_profile_grid(p, &gh, &gw);
  std::vector<float> x(B * gh * gw * D);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);

  std::vector<float> ref = score_once(p, x, B, 1);
  std::vector<std::vector<float>> got(4);
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t) pool.emplace_back([&, t] { got[t] = score_once(p, x, B, 1 + t % 2); });
  for (auto& th : pool) th.join();
  for (int t = 0; t < 4; ++t)
    EXPECT(got[t] == ref, "thread %d result differs from the single-threaded one", t);
  std::printf("threads: 4 concurrent scorers identical\n");

  careg_result* r = nullptr;
  EXPECT(careg_score(p, x.data(), B, gh * gw + 1, D, nullptr, 0, &r) == CAREG_ERR_ARGUMENT && !r,
         "wrong positions accepted");
  EXPECT(std::strstr(careg_last_error(), "positions") != nullptr, "message: %s", careg_last_error());
  float bad_theta[18] = {0};
  EXPECT(careg_score(p, x.data(), B, gh * gw, D, bad_theta, 0, &r) == CAREG_ERR_ARGUMENT,
         "singular theta_inv accepted");
  EXPECT(careg_profile_load("/nonexistent/x.careg", &p) == CAREG_ERR_IO, "missing file");
  std::printf("scores:");
  for (size_t b = 0; b < B; ++b) std::printf(" %.6f", ref[ref.size() - B + b]);
  std::printf("\n");
  fuzz(good);
  careg_free(p);
  careg_free(nullptr);
  std::printf(failures ? "FAILED\n" : "OK\n");
  return failures ? 1 : 0;
}
