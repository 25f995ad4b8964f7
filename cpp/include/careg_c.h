/* careg-edge scoring core: plain C API for programs without Python
 * (line controllers, PLC gateways). See docs/c-api.md.
 *
 * Every function returns a careg_status; on failure careg_last_error() gives a
 * one-line message for the calling thread. No C++ exception crosses this
 * boundary. A loaded profile is immutable: any number of threads may call
 * careg_score on the same profile at once.
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

/* Score B images: features [B, P, D] float32 row-major (assembled per the
 * profile; B may be 0), theta_inv [B, 2, 3] float32 or NULL (no registration).
 * threads = 0: hardware concurrency. Non-finite features give NaN distances at
 * their positions and a NaN image score, which careg_result_is_defect reports
 * as a defect. *out is set only on CAREG_OK; free it with careg_free. */
CAREG_API careg_status careg_score(const careg_profile* p, const float* features, size_t batch,
                                   size_t positions, size_t dim, const float* theta_inv,
                                   int threads, careg_result** out);

CAREG_API size_t careg_result_batch(const careg_result* r);
/* Per-position distances [B, P] (registered frame). */
CAREG_API const float* careg_result_distances(const careg_result* r);
/* Anomaly maps [B, image_h, image_w] in the encoder input frame. */
CAREG_API const float* careg_result_maps(const careg_result* r, size_t* height, size_t* width);
/* Image score of item b: the profile's rule on its map (maximum, mean, or mean
 * of the top P % of values); NaN if b is out of range or the map has a NaN. */
CAREG_API float careg_result_score(const careg_result* r, size_t b);
/* 1 if score > threshold or score is NaN, 0 if not, -1 if b is out of range. */
CAREG_API int careg_result_is_defect(const careg_result* r, size_t b);

/* Frees a careg_profile* or careg_result* (NULL is fine). */
CAREG_API void careg_free(void* handle);

/* Message of the last failed call on this thread ("" if none). Valid until the
 * next careg_* call on the same thread. */
CAREG_API const char* careg_last_error(void);

CAREG_API const char* careg_version(void);

#ifdef __cplusplus
}
#endif

#endif /* CAREG_C_H */
