/* Line-controller example: score assembled features against a profile.
 *
 *   score PROFILE.careg FEATURES.f32 [THETA_INV.f32] [THREADS]
 *
 * FEATURES.f32: raw little-endian float32 [B, P, D] (B from the file size);
 * THETA_INV.f32: raw float32 [B, 2, 3], or "-" for none. Prints one line per
 * image: "image <b>: score <s> threshold <t> -> DEFECT|OK". Exit 0 on success,
 * 1 on a usage or careg error (message on stderr): the decision is in the
 * output, the exit code reports errors only.
 */
#include <stdio.h>
#include <stdlib.h>

#include "careg_c.h"

static float* read_floats(const char* path, size_t* count) {
  FILE* f = fopen(path, "rb");
  long size;
  float* buf;
  if (!f) return NULL;
  if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
      size % 4 != 0) {
    fclose(f);
    return NULL;
  }
  buf = (float*)malloc(size > 0 ? (size_t)size : 1);
  if (buf && size > 0 && fread(buf, 1, (size_t)size, f) != (size_t)size) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *count = (size_t)size / 4;
  return buf;
}

static int fail(const char* what) {
  fprintf(stderr, "score: %s: %s\n", what, careg_last_error());
  return 1;
}

int main(int argc, char** argv) {
  careg_profile* profile = NULL;
  careg_result* result = NULL;
  float *features, *theta_inv = NULL;
  size_t n = 0, n_theta = 0, gh, gw, dim, batch, b;
  int threads = argc > 4 ? atoi(argv[4]) : 0;

  if (argc < 3) {
    fprintf(stderr, "usage: %s PROFILE.careg FEATURES.f32 [THETA_INV.f32|-] [THREADS]\n", argv[0]);
    return 1;
  }
  if (careg_profile_load(argv[1], &profile) != CAREG_OK) return fail("cannot load profile");
  careg_profile_grid(profile, &gh, &gw);
  dim = careg_profile_feature_dim(profile);
  features = read_floats(argv[2], &n);
  if (!features || n % (gh * gw * dim) != 0) {
    fprintf(stderr, "score: %s: expected raw float32 [B, %zu, %zu]\n", argv[2], gh * gw, dim);
    careg_free(profile);
    free(features);
    return 1;
  }
  batch = n / (gh * gw * dim);
  if (argc > 3 && argv[3][0] != '-') {
    theta_inv = read_floats(argv[3], &n_theta);
    if (!theta_inv || n_theta != batch * 6) {
      fprintf(stderr, "score: %s: expected raw float32 [%zu, 2, 3]\n", argv[3], batch);
      careg_free(profile);
      free(features);
      free(theta_inv);
      return 1;
    }
  }
  if (careg_score(profile, features, batch, gh * gw, dim, theta_inv, threads, &result) != CAREG_OK) {
    int rc = fail("cannot score");
    careg_free(profile);
    free(features);
    free(theta_inv);
    return rc;
  }
  printf("profile %s (%s), %zu image(s)\n", argv[1], careg_profile_estimator(profile), batch);
  for (b = 0; b < careg_result_batch(result); ++b)
    printf("image %zu: score %.6f threshold %.6f -> %s\n", b, careg_result_score(result, b),
           careg_profile_threshold(profile), careg_result_is_defect(result, b) ? "DEFECT" : "OK");
  careg_free(result);
  careg_free(profile);
  free(features);
  free(theta_inv);
  return 0;
}
