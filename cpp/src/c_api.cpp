// The C boundary: every entry point catches everything, stores the message in
// a thread-local and returns a status. Handles carry a tag so careg_free can
// tell a profile from a result.
#include "careg_c.h"

#include <cmath>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "careg/profile.h"

namespace {

enum class Tag : std::uint32_t { Profile = 0x50524f46u, Result = 0x52455355u, Dead = 0 };

thread_local std::string g_last_error;

template <class Fn>
careg_status guarded(Fn&& fn) {
  g_last_error.clear();
  try {
    fn();
    return CAREG_OK;
  } catch (const careg::FileError& e) {
    g_last_error = e.what();
    return static_cast<careg_status>(e.problem);
  } catch (const careg::Error& e) {
    g_last_error = e.what();
    return CAREG_ERR_ARGUMENT;
  } catch (const std::bad_alloc&) {
    g_last_error = "out of memory";
    return CAREG_ERR_MEMORY;
  } catch (const std::exception& e) {
    g_last_error = std::string("internal error: ") + e.what();
    return CAREG_ERR_INTERNAL;
  } catch (...) {
    g_last_error = "internal error";
    return CAREG_ERR_INTERNAL;
  }
}

}  // namespace

// Standard-layout with the tag first, so careg_free may read the tag of either.
struct careg_profile {
  Tag tag;
  std::unique_ptr<const careg::Profile> p;
};

struct careg_result {
  Tag tag = Tag::Result;
  std::size_t batch = 0, h = 0, w = 0;
  float threshold = 0.f;
  std::vector<float> dist, maps, scores;
};

static_assert(std::is_standard_layout<careg_profile>::value && std::is_standard_layout<careg_result>::value,
              "careg_free reads the leading tag of either handle");

extern "C" {

careg_status careg_profile_load(const char* path, careg_profile** out) {
  return guarded([&] {
    CAREG_CHECK(path && out, "careg_profile_load: path and out must not be NULL");
    *out = new careg_profile{Tag::Profile, std::make_unique<const careg::Profile>(careg::Profile::load(path))};
  });
}

careg_status careg_profile_load_memory(const void* data, size_t size, careg_profile** out) {
  return guarded([&] {
    CAREG_CHECK((data || size == 0) && out, "careg_profile_load_memory: data and out must not be NULL");
    static const std::uint8_t empty = 0;
    const auto* bytes = data ? static_cast<const std::uint8_t*>(data) : &empty;
    *out = new careg_profile{Tag::Profile,
                             std::make_unique<const careg::Profile>(careg::Profile::parse(bytes, size, "<memory>"))};
  });
}

const char* careg_profile_estimator(const careg_profile* p) { return p ? p->p->estimator.c_str() : ""; }
float careg_profile_threshold(const careg_profile* p) {
  return p ? p->p->threshold : std::numeric_limits<float>::quiet_NaN();
}
size_t careg_profile_feature_dim(const careg_profile* p) { return p ? p->p->feature_dim() : 0; }
void careg_profile_grid(const careg_profile* p, size_t* gh, size_t* gw) {
  if (gh) *gh = p ? p->p->grid_h : 0;
  if (gw) *gw = p ? p->p->grid_w : 0;
}
const char* careg_profile_image_score(const careg_profile* p) { return p ? p->p->image_score().c_str() : ""; }
void careg_profile_image_size(const careg_profile* p, size_t* ih, size_t* iw) {
  if (ih) *ih = p ? p->p->image_h : 0;
  if (iw) *iw = p ? p->p->image_w : 0;
}

careg_status careg_score(const careg_profile* p, const float* features, size_t batch, size_t positions,
                         size_t dim, const float* theta_inv, int threads, careg_result** out) {
  return guarded([&] {
    CAREG_CHECK(p && out && (features || batch == 0), "careg_score: profile, features and out must not be NULL");
    CAREG_CHECK(p->tag == Tag::Profile, "careg_score: the profile handle is not a loaded profile");
    const careg::Profile& prof = *p->p;
    CAREG_CHECK(positions == prof.positions(), "careg_score: features have " << positions << " positions, the profile's grid "
                                                   << prof.grid_h << "x" << prof.grid_w << " has " << prof.positions());
    CAREG_CHECK(batch <= (std::size_t(1) << 20), "careg_score: batch " << batch << " is unreasonably large");
    auto* r = new careg_result;
    try {
      r->batch = batch;
      r->h = prof.image_h;
      r->w = prof.image_w;
      r->threshold = prof.threshold;
      r->dist.resize(batch * positions);
      r->maps.resize(batch * r->h * r->w);
      r->scores.resize(batch);
      prof.score(features, batch, dim, theta_inv, r->dist.data(), r->maps.data(), r->scores.data(), threads);
    } catch (...) {
      delete r;
      throw;
    }
    *out = r;
  });
}

size_t careg_result_batch(const careg_result* r) { return r ? r->batch : 0; }
const float* careg_result_distances(const careg_result* r) { return r ? r->dist.data() : nullptr; }
const float* careg_result_maps(const careg_result* r, size_t* h, size_t* w) {
  if (h) *h = r ? r->h : 0;
  if (w) *w = r ? r->w : 0;
  return r ? r->maps.data() : nullptr;
}
float careg_result_score(const careg_result* r, size_t b) {
  return r && b < r->batch ? r->scores[b] : std::numeric_limits<float>::quiet_NaN();
}
int careg_result_is_defect(const careg_result* r, size_t b) {
  if (!r || b >= r->batch) return -1;
  float s = r->scores[b];
  return (std::isnan(s) || s > r->threshold) ? 1 : 0;
}

void careg_free(void* handle) {
  if (!handle) return;
  // Both structs start with their tag: read it to pick the right destructor.
  Tag tag = *static_cast<Tag*>(handle);
  if (tag == Tag::Profile) {
    auto* p = static_cast<careg_profile*>(handle);
    p->tag = Tag::Dead;
    delete p;
  } else if (tag == Tag::Result) {
    auto* r = static_cast<careg_result*>(handle);
    r->tag = Tag::Dead;
    delete r;
  }
}

const char* careg_last_error(void) { return g_last_error.c_str(); }
const char* careg_version(void) { return "0.1.0"; }

}  // extern "C"
