/* Python-free inspection of an image file: decode, preprocess per the profile,
 * encoder outputs, the careg road, verdict.
 *
 *   inspect PROFILE.careg IMAGE.ppm OUTPUTS.careg-out [THREADS]
 *
 * IMAGE.ppm: binary PPM (P6, maxval 255), decoded here without any library;
 * `python -m careg_edge.scoring IMAGE PROFILE -o OUT --ppm IMAGE.ppm` writes one.
 * OUTPUTS: the encoder's raw outputs for that image, written by careg-edge
 * (careg_edge.scoring.save_outputs). This program does not run the encoder: no
 * registry package here ships the ONNX Runtime C headers, so the call is shown in
 * docs/c-api.md ("Running the encoder from C") at the place marked ENCODER below.
 * The outputs file also holds the input tensor careg-edge fed the encoder; the
 * program compares it with its own preprocessing of IMAGE.ppm.
 *
 * Prints the profile facts, then per image "image <b>: score <s> threshold <t> ->
 * DEFECT|OK (<reason>)" and the map peak. Exit 0 on success, 1 on a usage or careg
 * error (message on stderr).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "careg_c.h"

typedef struct {
  size_t w, h;
  unsigned char* rgb; /* h * w * 3 */
} image;

/* Next header token of a PPM, skipping blanks and '#' comments; -1 on error. */
static long ppm_number(FILE* f) {
  int c = fgetc(f);
  long v = 0;
  int digits = 0;
  for (;;) {
    while (c == ' ' || c == '\t' || c == '\n' || c == '\r') c = fgetc(f);
    if (c != '#') break;
    while (c != '\n' && c != EOF) c = fgetc(f);
  }
  while (c >= '0' && c <= '9' && digits < 9) {
    v = v * 10 + (c - '0');
    ++digits;
    c = fgetc(f);
  }
  if (!digits || !(c == ' ' || c == '\t' || c == '\n' || c == '\r')) return -1; /* one blank ends it */
  return v;
}

static int read_ppm(const char* path, image* im) {
  FILE* f = fopen(path, "rb");
  long w, h, maxval;
  size_t n;
  if (!f) return 0;
  if (fgetc(f) != 'P' || fgetc(f) != '6' || (w = ppm_number(f)) <= 0 || (h = ppm_number(f)) <= 0 ||
      (maxval = ppm_number(f)) != 255 || w > 16384 || h > 16384) {
    fclose(f);
    return 0;
  }
  im->w = (size_t)w;
  im->h = (size_t)h;
  n = im->w * im->h * 3;
  im->rgb = (unsigned char*)malloc(n);
  if (!im->rgb || fread(im->rgb, 1, n, f) != n) {
    free(im->rgb);
    im->rgb = NULL;
    fclose(f);
    return 0;
  }
  fclose(f);
  return 1;
}

/* Source coordinate of output index i (half-pixel centres), clamped to the edge. */
static void tap(size_t i, size_t out, size_t in, size_t* i0, size_t* i1, double* f) {
  double s = ((double)i + 0.5) * (double)in / (double)out - 0.5;
  if (s < 0) s = 0;
  if (s > (double)(in - 1)) s = (double)(in - 1);
  *i0 = (size_t)s;
  *i1 = *i0 + 1 < in ? *i0 + 1 : *i0;
  *f = s - (double)*i0;
}

/* RGB uint8 -> float32 NCHW [1, 3, H, W]: bilinear resize (half-pixel centres, edge
 * clamped) when the size differs, then (rgb * scale - mean) / std. careg-edge shrinks
 * with area interpolation instead, so give an image at the input size for identical
 * input tensors. */
static float* preprocess(const image* im, size_t H, size_t W, const float mean[3], const float std_[3],
                         float scale) {
  float* x = (float*)malloc(3 * H * W * sizeof(float));
  size_t y, xx, c, y0, y1, x0, x1;
  double fy, fx;
  if (!x) return NULL;
  for (y = 0; y < H; ++y) {
    tap(y, H, im->h, &y0, &y1, &fy);
    for (xx = 0; xx < W; ++xx) {
      tap(xx, W, im->w, &x0, &x1, &fx);
      for (c = 0; c < 3; ++c) {
        const unsigned char* p = im->rgb + c;
        double top = p[(y0 * im->w + x0) * 3] * (1 - fx) + p[(y0 * im->w + x1) * 3] * fx;
        double bot = p[(y1 * im->w + x0) * 3] * (1 - fx) + p[(y1 * im->w + x1) * 3] * fx;
        float v = (float)(top * (1 - fy) + bot * fy); /* exact pixel values when no resize */
        x[(c * H + y) * W + xx] = (v * scale - mean[c]) / std_[c];
      }
    }
  }
  return x;
}

static int fail(const char* what) {
  fprintf(stderr, "inspect: %s: %s\n", what, careg_last_error());
  return 1;
}

int main(int argc, char** argv) {
  careg_profile* profile = NULL;
  careg_outputs_file* file = NULL;
  careg_result* result = NULL;
  careg_outputs outputs;
  image im = {0, 0, NULL};
  float mean[3], std_[3], scale, *x = NULL, *map = NULL;
  const float* fed = NULL;
  const char* mode = "";
  size_t channels[3], stride, H, W, b, i;
  int aggregate, threads = argc > 4 ? atoi(argv[4]) : 0, rc = 1;
  double diff = 0.0, t_feat, t_score, t_map;

  if (argc < 4) {
    fprintf(stderr, "usage: %s PROFILE.careg IMAGE.ppm OUTPUTS.careg-out [THREADS]\n", argv[0]);
    return 1;
  }
  if (careg_profile_load(argv[1], &profile) != CAREG_OK) return fail("cannot load profile");
  if (careg_profile_normalisation(profile, mean, std_, &scale) != CAREG_OK ||
      careg_profile_features(profile, channels, &stride, &mode, &aggregate) != CAREG_OK) {
    rc = fail("profile has no feature layout");
    goto done;
  }
  careg_profile_image_size(profile, &H, &W);
  printf("profile %s: %s, rule %s, mode %s, channels %zu+%zu+%zu, stride %zu%s%s%s, threshold %g\n", argv[1],
         careg_profile_estimator(profile), careg_profile_image_score(profile), mode, channels[0], channels[1],
         channels[2], stride, aggregate ? ", 3x3 aggregate" : "", *careg_profile_search(profile) ? ", search " : "",
         careg_profile_search(profile), careg_profile_threshold(profile));
  if (!read_ppm(argv[2], &im)) {
    fprintf(stderr, "inspect: %s: not a binary PPM (P6, maxval 255)\n", argv[2]);
    goto done;
  }
  x = preprocess(&im, H, W, mean, std_, scale);
  if (!x) {
    fprintf(stderr, "inspect: out of memory\n");
    goto done;
  }
  /* ENCODER: here a line controller runs its encoder on x [1, 3, H, W] (ONNX Runtime
   * C API: docs/c-api.md) and points `outputs` at feat1..3, theta, theta_inv. */
  if (careg_outputs_load(argv[3], &file) != CAREG_OK || careg_outputs_view(file, &outputs, &fed) != CAREG_OK) {
    rc = fail("cannot read encoder outputs");
    goto done;
  }
  if (fed && outputs.batch == 1) {
    for (i = 0; i < 3 * H * W; ++i) diff = fabs(fed[i] - x[i]) > diff ? fabs(fed[i] - x[i]) : diff;
    printf("input check: max |careg-edge input - this program's| = %.3g\n", diff);
  }
  if (careg_inspect(profile, &outputs, NULL, threads, &result) != CAREG_OK) {
    rc = fail("cannot inspect");
    goto done;
  }
  map = (float*)malloc(im.w * im.h * sizeof(float));
  for (b = 0; b < careg_result_batch(result) && map; ++b) {
    size_t peak = 0;
    if (careg_result_map_resized(result, b, im.h, im.w, map) != CAREG_OK) {
      rc = fail("cannot resize the map");
      goto done;
    }
    for (i = 1; i < im.w * im.h; ++i)
      if (map[i] > map[peak]) peak = i;
    printf("image %zu: score %.6f threshold %.6f -> %s (%s); map peak %.4f at x=%zu y=%zu\n", b,
           careg_result_score(result, b), careg_profile_threshold(profile),
           careg_result_is_defect(result, b) ? "DEFECT" : "OK", careg_result_reason(result, b), map[peak],
           peak % im.w, peak / im.w);
  }
  careg_result_timings(result, &t_feat, &t_score, &t_map);
  printf("core ms: features %.2f, score %.2f, map %.2f\n", t_feat, t_score, t_map);
  rc = map ? 0 : 1;
done:
  free(map);
  free(x);
  free(im.rgb);
  careg_free(result);
  careg_free(file);
  careg_free(profile);
  return rc;
}
