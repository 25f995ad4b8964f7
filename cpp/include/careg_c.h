/* careg-edge scoring core: plain C API for programs without Python
 * (line controllers, PLC gateways). See docs/c-api.md.
 *
 * Errors: functions return a careg_status; on failure careg_last_error() gives a
 * one-line message (naming the field or file) for the calling thread. No C++
 * exception crosses this boundary.
 * Ownership: every handle (careg_profile, careg_result, careg_outputs_file) is
 * created by this library and freed by careg_free; pointers returned by accessors
 * point into a handle and live as long as it. Input arrays are only read during
 * the call that receives them.
 * Threading: a loaded profile is immutable; any number of threads may call
 * careg_inspect / careg_score on the same profile at once. A careg_result may be
 * read from several threads; free it once. careg_last_error is per thread.
 */
#ifndef CAREG_C_H
#define CAREG_C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define CAREG_API __declspec(dllexport)
#else
#define CAREG_API __attribute__((visibility("default")))
#endif

typedef enum careg_status {
  CAREG_OK = 0,
  CAREG_ERR_ARGUMENT = 1, /* null pointer, wrong size, bad theta, features vs profile */
  CAREG_ERR_IO = 2,       /* file cannot be opened or read */
  CAREG_ERR_FORMAT = 3,   /* malformed/truncated profile, bad tensor entry or shape */
  CAREG_ERR_CHECKSUM = 4, /* CRC-32 mismatch: the file is corrupt */
  CAREG_ERR_VERSION = 5,  /* profile format version this library does not read */
  CAREG_ERR_KIND = 6,     /* a careg-edge file, but not a profile */
  CAREG_ERR_MEMORY = 7,
  CAREG_ERR_INTERNAL = 8
} careg_status;

typedef struct careg_profile careg_profile; /* opaque, immutable once loaded */
typedef struct careg_result careg_result;   /* opaque, owned by the caller */

/* Load and fully validate a .careg profile. *out is set only on CAREG_OK. */
CAREG_API careg_status careg_profile_load(const char* path, careg_profile** out);
/* Same from memory (the bytes are copied; `data` may be freed afterwards). */
CAREG_API careg_status careg_profile_load_memory(const void* data, size_t size, careg_profile** out);

/* Profile facts: the features careg_score expects are [B, P, D] with
 * P = grid_h * grid_w and D = careg_profile_feature_dim(). */
CAREG_API const char* careg_profile_estimator(const careg_profile* p);
CAREG_API float careg_profile_threshold(const careg_profile* p);
CAREG_API size_t careg_profile_feature_dim(const careg_profile* p);
CAREG_API void careg_profile_grid(const careg_profile* p, size_t* grid_h, size_t* grid_w);
CAREG_API void careg_profile_image_size(const careg_profile* p, size_t* image_h, size_t* image_w);
/* Image-score rule the profile was enrolled with: "max", "mean" or "top<P>%"
 * (older profiles without it: "max"). careg_result_score applies it. */
CAREG_API const char* careg_profile_image_score(const careg_profile* p);

/* ---- What the road reads from the profile (all of it, so a C program can
 * preprocess, run the encoder and check its outputs without Python). Functions
 * returning careg_status need the profile's `profile` JSON (every careg-edge
 * enrollment writes it); older hand-made files give CAREG_ERR_FORMAT. */
CAREG_API float careg_profile_sigma(const careg_profile* p);
/* Encoder input normalisation: input = (rgb * scale - mean[c]) / std[c], RGB order,
 * NCHW float32 at careg_profile_image_size. */
CAREG_API careg_status careg_profile_normalisation(const careg_profile* p, float mean[3], float std[3],
                                                   float* scale);
/* Channels of feat1..3 the encoder must emit, the grid stride, the localisation
 * mode ("unwarp" | "registered") and whether PatchCore 3x3 aggregation is on. */
CAREG_API careg_status careg_profile_features(const careg_profile* p, size_t channels[3], size_t* grid_stride,
                                              const char** mode, int* aggregate);
/* Channel subset (indices into feat1|feat2|feat3) or projection [Din, D] float32
 * row-major; NULL with *n = 0 (or *rows = *cols = 0) when the profile has none.
 * Pointers stay valid while the profile lives. */
CAREG_API const int64_t* careg_profile_channel_index(const careg_profile* p, size_t* n);
CAREG_API const float* careg_profile_projection(const careg_profile* p, size_t* rows, size_t* cols);
/* PatchCore search: "global" | "local" ("" for other estimators), its radius in grid
 * cells and the Eq. 7 re-weighting neighbourhood (reweight_k). */
CAREG_API const char* careg_profile_search(const careg_profile* p);
CAREG_API size_t careg_profile_radius(const careg_profile* p);
CAREG_API size_t careg_profile_reweight_k(const careg_profile* p);

/* ---- The road: raw encoder outputs -> distances, maps, image scores, verdicts.
 * The same C++ function careg_edge.Inspector.inspect_batch calls. */
typedef struct careg_outputs {
  size_t batch;                 /* B (may be 0) */
  const float* feat[3];         /* feat1..3 [B, C_k, H_k, W_k] float32 row-major, as emitted */
  size_t channels[3], height[3], width[3];
  const float* theta;           /* [B, 3, 2, 3] float32 */
  const float* theta_inv;       /* [B, 3, 2, 3] float32 */
} careg_outputs;

typedef struct careg_options {
  int search;       /* -1: the profile's; 0: global; 1: registered-local (PatchCore) */
  long radius;      /* -1: the profile's; else the local-search radius in grid cells */
  float threshold;  /* NaN: the profile's; else the threshold to judge against */
} careg_options;
/* {-1, -1, NaN}: everything from the profile. */
CAREG_API careg_options careg_default_options(void);

/* Inspect B images from their raw encoder outputs (not copied; only read during
 * the call). opts may be NULL (= careg_default_options()). threads = 0: hardware
 * concurrency. Any shape that does not match the profile (channels, batch, theta
 * shapes), a NaN/inf in the outputs, or a profile without its feature layout gives
 * CAREG_ERR_ARGUMENT/CAREG_ERR_FORMAT and a message naming the field; nothing is
 * scored then. *out is set only on CAREG_OK; free it with careg_free. */
CAREG_API careg_status careg_inspect(const careg_profile* p, const careg_outputs* outputs,
                                     const careg_options* opts, int threads, careg_result** out);

/* Lower level, same scoring code: features already assembled [B, P, D] float32
 * row-major (P = grid_h * grid_w, D = careg_profile_feature_dim), theta_inv of
 * stage 3 [B, 2, 3] (registered mode) or NULL. Non-finite features are refused
 * (CAREG_ERR_ARGUMENT naming features[b]). Verdicts use the profile's threshold. */
CAREG_API careg_status careg_score(const careg_profile* p, const float* features, size_t batch,
                                   size_t positions, size_t dim, const float* theta_inv,
                                   int threads, careg_result** out);

CAREG_API size_t careg_result_batch(const careg_result* r);
/* Per-position distances [B, P] (scoring frame). */
CAREG_API const float* careg_result_distances(const careg_result* r);
/* Anomaly maps [B, image_h, image_w] in the encoder input frame. */
CAREG_API const float* careg_result_maps(const careg_result* r, size_t* height, size_t* width);
/* Map b resized bilinearly to height x width (e.g. the camera image's own size)
 * into out[height * width], caller-owned. */
CAREG_API careg_status careg_result_map_resized(const careg_result* r, size_t b, size_t height, size_t width,
                                                float* out);
/* Image score of item b under the profile's rule: max (PatchCore: its Eq. 7
 * re-weighted maximum), mean, or mean of the top P % of map values; NaN if b is out
 * of range or a value is not finite. */
CAREG_API float careg_result_score(const careg_result* r, size_t b);
/* 1 if defect (score > threshold, or score not finite), 0 if not, -1 if b is out of range. */
CAREG_API int careg_result_is_defect(const careg_result* r, size_t b);
/* One line saying why (e.g. "score 3.2 > threshold 3"; "image score is NaN: ...");
 * "" if b is out of range. Valid while r lives. */
CAREG_API const char* careg_result_reason(const careg_result* r, size_t b);
/* Milliseconds spent in assembly, distances and map + image score by this call. */
CAREG_API void careg_result_timings(const careg_result* r, double* features_ms, double* score_ms, double* map_ms);

/* ---- Encoder outputs saved by careg-edge (careg_edge.scoring.save_outputs, a
 * container of kind careg-encoder-outputs): for programs that run no encoder. */
typedef struct careg_outputs_file careg_outputs_file;
CAREG_API careg_status careg_outputs_load(const char* path, careg_outputs_file** out);
/* View of the file's tensors (valid while the file handle lives); the `input`
 * tensor [B, 3, H, W] the encoder was given is returned too (NULL if absent). */
CAREG_API careg_status careg_outputs_view(const careg_outputs_file* f, careg_outputs* view, const float** input);

/* Frees a careg_profile*, careg_result* or careg_outputs_file* (NULL is fine). */
CAREG_API void careg_free(void* handle);

/* Message of the last failed call on this thread ("" if none). Valid until the
 * next careg_* call on the same thread. */
CAREG_API const char* careg_last_error(void);

CAREG_API const char* careg_version(void);

#ifdef __cplusplus
}
#endif

#endif /* CAREG_C_H */
