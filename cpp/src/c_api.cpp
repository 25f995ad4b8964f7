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
#include "careg/road.h"

namespace {

enum class Tag : std::uint32_t { Profile = 0x50524f46u, Result = 0x52455355u, Outputs = 0x4f555450u, Dead = 0 };

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

// Standard-layout with the tag first, so careg_free may read the tag of any handle.
// The Scorer (tensor copies in road form) is built once at load; the Layout too
// when the profile JSON has one, else layout_error says why careg_inspect cannot run.
struct careg_profile {
  Tag tag;
  std::unique_ptr<const careg::Profile> p;
  std::unique_ptr<const careg::Scorer> scorer;
  std::unique_ptr<const careg::Layout> layout;
  std::string layout_error, mode;
};

struct careg_result {
  Tag tag = Tag::Result;
  std::size_t batch = 0, h = 0, w = 0;
  std::unique_ptr<careg::Inspection> r = std::make_unique<careg::Inspection>();
};

struct careg_outputs_file {
  Tag tag;
  std::unique_ptr<careg::Container> c;
};

static_assert(std::is_standard_layout<careg_profile>::value && std::is_standard_layout<careg_result>::value &&
                  std::is_standard_layout<careg_outputs_file>::value,
              "careg_free reads the leading tag of every handle");

namespace {

careg_profile* wrap(careg::Profile&& prof) {
  auto h = std::make_unique<careg_profile>();
  h->tag = Tag::Profile;
  h->p = std::make_unique<const careg::Profile>(std::move(prof));
  h->scorer = std::make_unique<const careg::Scorer>(careg::scorer_of(*h->p));
  try {
    h->layout = std::make_unique<const careg::Layout>(careg::layout_of(*h->p));
    h->mode = h->layout->mode == careg::Mode::Unwarp ? "unwarp" : "registered";
  } catch (const careg::Error& e) {
    h->layout_error = e.what();
  }
  return h.release();
}

const careg_profile& checked(const careg_profile* p, const char* fn) {
  CAREG_CHECK(p && p->tag == Tag::Profile, fn << ": the profile handle is NULL or not a loaded profile");
  return *p;
}

void finish(careg_result* r, float threshold) {
  r->r->defect.assign(r->batch, 0);
  r->r->reason.assign(r->batch, std::string());
  for (std::size_t b = 0; b < r->batch; ++b) r->r->defect[b] = careg::verdict(r->r->scores[b], threshold, r->r->reason[b]);
}

}  // namespace

extern "C" {

careg_status careg_profile_load(const char* path, careg_profile** out) {
  return guarded([&] {
    CAREG_CHECK(path && out, "careg_profile_load: path and out must not be NULL");
    *out = wrap(careg::Profile::load(path));
  });
}

careg_status careg_profile_load_memory(const void* data, size_t size, careg_profile** out) {
  return guarded([&] {
    CAREG_CHECK((data || size == 0) && out, "careg_profile_load_memory: data and out must not be NULL");
    static const std::uint8_t empty = 0;
    const auto* bytes = data ? static_cast<const std::uint8_t*>(data) : &empty;
    *out = wrap(careg::Profile::parse(bytes, size, "<memory>"));
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

float careg_profile_sigma(const careg_profile* p) { return p ? p->p->sigma : std::numeric_limits<float>::quiet_NaN(); }

careg_status careg_profile_normalisation(const careg_profile* p, float mean[3], float std_[3], float* scale) {
  return guarded([&] {
    const careg_profile& h = checked(p, "careg_profile_normalisation");
    CAREG_CHECK(mean && std_ && scale, "careg_profile_normalisation: mean, std and scale must not be NULL");
    try {
      careg::Normalisation n = careg::normalisation_of(*h.p);
      for (int c = 0; c < 3; ++c) mean[c] = n.mean[c], std_[c] = n.std[c];
      *scale = n.scale;
    } catch (const careg::Error& e) {
      throw careg::FileError(careg::FileProblem::Format, e.what());
    }
  });
}

careg_status careg_profile_features(const careg_profile* p, size_t channels[3], size_t* grid_stride,
                                    const char** mode, int* aggregate) {
  return guarded([&] {
    const careg_profile& h = checked(p, "careg_profile_features");
    if (!h.layout) throw careg::FileError(careg::FileProblem::Format, h.layout_error);
    for (int k = 0; k < 3 && channels; ++k) channels[k] = h.layout->channels[k];
    if (grid_stride) *grid_stride = h.layout->grid_stride;
    if (mode) *mode = h.mode.c_str();
    if (aggregate) *aggregate = h.layout->aggregate ? 1 : 0;
  });
}

const int64_t* careg_profile_channel_index(const careg_profile* p, size_t* n) {
  const careg::Tensor* t = p ? p->p->tensor("channel_index") : nullptr;
  if (n) *n = t ? t->shape[0] : 0;
  return t && t->shape[0] ? t->as<std::int64_t>() : nullptr;
}

const float* careg_profile_projection(const careg_profile* p, size_t* rows, size_t* cols) {
  const careg::Tensor* t = p ? p->p->tensor("projection") : nullptr;
  if (rows) *rows = t ? t->shape[0] : 0;
  if (cols) *cols = t ? t->shape[1] : 0;
  return t && t->nbytes ? t->as<float>() : nullptr;
}

const char* careg_profile_search(const careg_profile* p) {
  if (!p || p->scorer->estimator != careg::Estimator::PatchCore) return "";
  return p->scorer->local ? "local" : "global";
}
size_t careg_profile_radius(const careg_profile* p) { return p ? p->scorer->radius : 0; }
size_t careg_profile_reweight_k(const careg_profile* p) { return p ? p->scorer->reweight_k : 0; }

careg_options careg_default_options(void) {
  careg_options o;
  o.search = -1;
  o.radius = -1;
  o.threshold = std::numeric_limits<float>::quiet_NaN();
  return o;
}

careg_status careg_inspect(const careg_profile* p, const careg_outputs* o, const careg_options* opts, int threads,
                           careg_result** out) {
  return guarded([&] {
    const careg_profile& h = checked(p, "careg_inspect");
    CAREG_CHECK(o && out, "careg_inspect: outputs and out must not be NULL");
    if (!h.layout) throw careg::FileError(careg::FileProblem::Format, h.layout_error);
    CAREG_CHECK(o->batch <= (std::size_t(1) << 20), "careg_inspect: batch " << o->batch << " is unreasonably large");
    careg_options opt = opts ? *opts : careg_default_options();
    careg::RoadOptions ro;
    ro.search = opt.search;
    ro.radius = opt.radius;
    careg::Outputs raw;
    raw.batch = o->batch;
    for (int k = 0; k < 3; ++k) {
      raw.feat[k] = o->feat[k];
      raw.channels[k] = o->channels[k];
      raw.height[k] = o->height[k];
      raw.width[k] = o->width[k];
    }
    raw.theta = o->theta;
    raw.theta_inv = o->theta_inv;
    auto r = std::make_unique<careg_result>();
    r->batch = o->batch;
    r->h = h.p->image_h;
    r->w = h.p->image_w;
    float threshold = std::isnan(opt.threshold) ? h.p->threshold : opt.threshold;
    careg::inspect(*h.layout, *h.scorer, raw, threshold, *r->r, threads, &ro);
    *out = r.release();
  });
}

careg_status careg_score(const careg_profile* p, const float* features, size_t batch, size_t positions,
                         size_t dim, const float* theta_inv, int threads, careg_result** out) {
  return guarded([&] {
    const careg_profile& h = checked(p, "careg_score");
    CAREG_CHECK(out && (features || batch == 0), "careg_score: features and out must not be NULL");
    const careg::Profile& prof = *h.p;
    CAREG_CHECK(positions == prof.positions(), "careg_score: features have " << positions << " positions, the profile's grid "
                                                   << prof.grid_h << "x" << prof.grid_w << " has " << prof.positions());
    CAREG_CHECK(dim == prof.feature_dim(), "careg_score: features have D=" << dim << " but the " << prof.estimator
                                               << " profile expects D=" << prof.feature_dim()
                                               << " (assemble features per the profile's channel_index/projection)");
    CAREG_CHECK(batch <= (std::size_t(1) << 20), "careg_score: batch " << batch << " is unreasonably large");
    auto r = std::make_unique<careg_result>();
    r->batch = batch;
    r->h = prof.image_h;
    r->w = prof.image_w;
    careg::score(*h.scorer, features, batch, theta_inv, *r->r, threads);
    finish(r.get(), prof.threshold);
    *out = r.release();
  });
}

size_t careg_result_batch(const careg_result* r) { return r ? r->batch : 0; }
const float* careg_result_distances(const careg_result* r) { return r ? r->r->dist.data() : nullptr; }
const float* careg_result_maps(const careg_result* r, size_t* h, size_t* w) {
  if (h) *h = r ? r->h : 0;
  if (w) *w = r ? r->w : 0;
  return r ? r->r->maps.data() : nullptr;
}
careg_status careg_result_map_resized(const careg_result* r, size_t b, size_t height, size_t width, float* out) {
  return guarded([&] {
    CAREG_CHECK(r && r->tag == Tag::Result && out, "careg_result_map_resized: result and out must not be NULL");
    CAREG_CHECK(b < r->batch, "careg_result_map_resized: item " << b << " is outside the batch of " << r->batch);
    careg::resize_map(r->r->maps.data() + b * r->h * r->w, r->h, r->w, height, width, out);
  });
}
float careg_result_score(const careg_result* r, size_t b) {
  return r && b < r->batch ? r->r->scores[b] : std::numeric_limits<float>::quiet_NaN();
}
int careg_result_is_defect(const careg_result* r, size_t b) {
  if (!r || b >= r->batch) return -1;
  return r->r->defect[b] ? 1 : 0;
}
const char* careg_result_reason(const careg_result* r, size_t b) {
  return r && b < r->batch ? r->r->reason[b].c_str() : "";
}
void careg_result_timings(const careg_result* r, double* features_ms, double* score_ms, double* map_ms) {
  if (features_ms) *features_ms = r ? r->r->ms_features : 0.0;
  if (score_ms) *score_ms = r ? r->r->ms_score : 0.0;
  if (map_ms) *map_ms = r ? r->r->ms_map : 0.0;
}

careg_status careg_outputs_load(const char* path, careg_outputs_file** out) {
  return guarded([&] {
    CAREG_CHECK(path && out, "careg_outputs_load: path and out must not be NULL");
    auto f = std::make_unique<careg_outputs_file>();
    f->tag = Tag::Outputs;
    f->c = std::make_unique<careg::Container>(careg::read_file(path, "careg-encoder-outputs", "1"));
    const char* names[5] = {"feat1", "feat2", "feat3", "theta", "theta_inv"};
    std::size_t batch = 0;
    for (int i = 0; i < 5; ++i) {
      auto it = f->c->tensors.find(names[i]);
      if (it == f->c->tensors.end())
        throw careg::FileError(careg::FileProblem::Format, std::string(path) + ": lacks tensor '" + names[i] + "'");
      const careg::Tensor& t = it->second;
      if (t.dtype != careg::DType::F32 || t.shape.size() != 4)
        throw careg::FileError(careg::FileProblem::Format, std::string(path) + ": tensor '" + names[i] +
                                                               "' must be F32 with 4 dimensions");
      if (i == 0) batch = t.shape[0];
      if (t.shape[0] != batch || (i >= 3 && (t.shape[1] != 3 || t.shape[2] != 2 || t.shape[3] != 3)))
        throw careg::FileError(careg::FileProblem::Format, std::string(path) + ": tensor '" + names[i] +
                                                               "' has a shape that does not fit the batch");
    }
    *out = f.release();
  });
}

careg_status careg_outputs_view(const careg_outputs_file* f, careg_outputs* v, const float** input) {
  return guarded([&] {
    CAREG_CHECK(f && f->tag == Tag::Outputs && v, "careg_outputs_view: file and view must not be NULL");
    const auto& t = f->c->tensors;
    const char* names[3] = {"feat1", "feat2", "feat3"};
    for (int k = 0; k < 3; ++k) {
      const careg::Tensor& x = t.at(names[k]);
      v->feat[k] = x.as<float>();
      v->channels[k] = x.shape[1];
      v->height[k] = x.shape[2];
      v->width[k] = x.shape[3];
      v->batch = x.shape[0];
    }
    v->theta = t.at("theta").as<float>();
    v->theta_inv = t.at("theta_inv").as<float>();
    if (input) {
      auto it = t.find("input");
      *input = it != t.end() && it->second.dtype == careg::DType::F32 ? it->second.as<float>() : nullptr;
    }
  });
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
  } else if (tag == Tag::Outputs) {
    auto* f = static_cast<careg_outputs_file*>(handle);
    f->tag = Tag::Dead;
    delete f;
  }
}

const char* careg_last_error(void) { return g_last_error.c_str(); }
const char* careg_version(void) { return "0.1.0"; }

}  // extern "C"
