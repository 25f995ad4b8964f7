// Built with -fsanitize=address,undefined by tests/test_core_capi.py:
//   careg_core_test PROFILE.careg [OUTPUTS.careg-out]
// 1. the profile loads and scores like a naive recomputation,
// 2. 4 threads scoring the same profile at once give identical results,
// 3. thousands of truncated / bit-flipped / length-lying variants are refused
//    (or, when a mutation is harmless and re-checksummed, load and score) without
//    a crash or an out-of-bounds read (the sanitizers abort on those),
// 4. with OUTPUTS (raw encoder outputs saved by careg-edge): careg_inspect from 4
//    threads is identical to one thread, and every bad input (wrong channel count,
//    batch, sizes, NaN/inf outputs, NULLs, bad options) is refused with a status and
//    a message naming the field.
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

static std::vector<float> inspect_once(const careg_profile* p, const careg_outputs* o, const careg_options* opt,
                                       int threads) {
  careg_result* r = nullptr;
  careg_status st = careg_inspect(p, o, opt, threads, &r);
  EXPECT(st == CAREG_OK, "careg_inspect: %s", careg_last_error());
  if (st != CAREG_OK) return {};
  size_t h, w, gh, gw;
  careg_profile_grid(p, &gh, &gw);
  const float* maps = careg_result_maps(r, &h, &w);
  std::vector<float> out(careg_result_distances(r), careg_result_distances(r) + o->batch * gh * gw);
  out.insert(out.end(), maps, maps + o->batch * h * w);
  for (size_t b = 0; b < o->batch; ++b) {
    out.push_back(careg_result_score(r, b));
    out.push_back(float(careg_result_is_defect(r, b)));
    EXPECT(std::strlen(careg_result_reason(r, b)) > 0, "empty reason");
  }
  std::vector<float> small(7 * 5);
  EXPECT(careg_result_map_resized(r, 0, 7, 5, small.data()) == CAREG_OK, "resize: %s", careg_last_error());
  EXPECT(careg_result_map_resized(r, o->batch, 7, 5, small.data()) == CAREG_ERR_ARGUMENT, "resize out of range");
  careg_free(r);
  return out;
}

// Expect careg_inspect to refuse `o` with `status` and a message containing `needle`.
static void refuse(const careg_profile* p, const careg_outputs& o, const careg_options* opt, careg_status status,
                   const char* needle, const char* what) {
  careg_result* r = nullptr;
  careg_status st = careg_inspect(p, &o, opt, 1, &r);
  EXPECT(st == status && !r, "%s: status %d (want %d)", what, int(st), int(status));
  EXPECT(std::strstr(careg_last_error(), needle) != nullptr, "%s: message '%s' lacks '%s'", what,
         careg_last_error(), needle);
  careg_free(r);
}

static void inspect_checks(const careg_profile* p, const char* path) {
  careg_outputs_file* f = nullptr;
  careg_outputs o;
  EXPECT(careg_outputs_load(path, &f) == CAREG_OK, "outputs: %s", careg_last_error());
  if (!f) return;
  EXPECT(careg_outputs_view(f, &o, nullptr) == CAREG_OK, "view: %s", careg_last_error());
  std::vector<float> ref = inspect_once(p, &o, nullptr, 1);
  std::vector<std::vector<float>> got(4);
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t) pool.emplace_back([&, t] { got[t] = inspect_once(p, &o, nullptr, 1 + t % 2); });
  for (auto& th : pool) th.join();
  for (int t = 0; t < 4; ++t) EXPECT(got[t] == ref, "inspect thread %d differs", t);
  careg_options opt = careg_default_options();
  opt.search = 1;
  opt.radius = 0;
  inspect_once(p, &o, &opt, 2);
  opt.threshold = -1.f;
  std::vector<float> all = inspect_once(p, &o, &opt, 1);
  EXPECT(!all.empty() && all.back() == 1.f, "threshold override -1 must make a defect");
  std::printf("inspect: 4 concurrent inspections identical\n");

  careg_outputs bad = o;
  bad.channels[1] += 1;
  refuse(p, bad, nullptr, CAREG_ERR_ARGUMENT, "feat2 has", "wrong channel count");
  bad = o;
  bad.feat[2] = nullptr;
  refuse(p, bad, nullptr, CAREG_ERR_ARGUMENT, "feat3", "NULL feat3");
  bad = o;
  bad.height[0] = 0;
  refuse(p, bad, nullptr, CAREG_ERR_ARGUMENT, "feat1", "empty feat1");
  bad = o;
  bad.theta_inv = nullptr;
  refuse(p, bad, nullptr, CAREG_ERR_ARGUMENT, "theta", "NULL theta_inv");
  size_t n1 = o.batch * o.channels[0] * o.height[0] * o.width[0];
  std::vector<float> f1(o.feat[0], o.feat[0] + n1), th(o.theta_inv, o.theta_inv + o.batch * 18);
  f1[n1 / 2] = std::nanf("");
  bad = o;
  bad.feat[0] = f1.data();
  refuse(p, bad, nullptr, CAREG_ERR_ARGUMENT, "non-finite", "NaN in feat1");
  th[4] = INFINITY;
  bad = o;
  bad.theta_inv = th.data();
  refuse(p, bad, nullptr, CAREG_ERR_ARGUMENT, "theta_inv[0]", "inf in theta_inv");
  opt = careg_default_options();
  opt.search = 7;
  refuse(p, o, &opt, CAREG_ERR_ARGUMENT, "search", "bad search option");
  opt = careg_default_options();
  opt.radius = -5;
  refuse(p, o, &opt, CAREG_ERR_ARGUMENT, "radius", "bad radius option");
  careg_result* r = nullptr;
  EXPECT(careg_inspect(p, nullptr, nullptr, 1, &r) == CAREG_ERR_ARGUMENT && !r, "NULL outputs accepted");
  EXPECT(careg_inspect(nullptr, &o, nullptr, 1, &r) == CAREG_ERR_ARGUMENT && !r, "NULL profile accepted");
  bad = o;
  bad.batch = 0;
  EXPECT(careg_inspect(p, &bad, nullptr, 1, &r) == CAREG_OK && careg_result_batch(r) == 0, "batch 0: %s",
         careg_last_error());
  careg_free(r);
  careg_outputs_file* missing = nullptr;
  EXPECT(careg_outputs_load("/nonexistent/o.careg-out", &missing) == CAREG_ERR_IO && !missing, "missing outputs");
  EXPECT(careg_outputs_load(nullptr, &missing) == CAREG_ERR_ARGUMENT, "NULL path accepted");
  std::printf("inspect: bad inputs refused\n");
  careg_free(f);
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
  if (argc > 2) inspect_checks(p, argv[2]);
  fuzz(good);
  careg_free(p);
  careg_free(nullptr);
  std::printf(failures ? "FAILED\n" : "OK\n");
  return failures ? 1 : 0;
}
