// A loaded .careg profile -> the road's Layout and Scorer. The flat metadata keys
// and tensors give the Scorer; the `profile` JSON (written by every careg-edge
// enrollment) gives the feature layout, the PatchCore search options and the
// normalisation, so existing files need no new keys.
#include <cmath>
#include <cstring>
#include <locale>
#include <sstream>

#include "careg/half.h"
#include "careg/profile.h"

namespace careg {
namespace {

const Json& info_of(const Profile& p) {
  CAREG_CHECK(p.info_ok(), "profile: the 'profile' JSON metadata is missing or unreadable, so the feature layout "
                           "is unknown; re-enroll with careg-edge");
  return p.info();
}

const Json& member(const Json& obj, const char* key, const char* path) {
  const Json* v = obj.type == Json::Object ? obj.find(key) : nullptr;
  CAREG_CHECK(v, "profile JSON lacks '" << path << "'; re-enroll");
  return *v;
}

double number(const Json& v, const char* path) {
  CAREG_CHECK(v.type == Json::Number, "profile JSON '" << path << "' must be a number");
  std::istringstream in(v.text);
  in.imbue(std::locale::classic());
  double x = 0;
  in >> x;
  CAREG_CHECK(in && in.peek() == EOF && std::isfinite(x), "profile JSON '" << path << "' is not a finite number");
  return x;
}

std::size_t count(const Json& v, const char* path, std::size_t lo, std::size_t hi) {
  std::uint64_t x = 0;
  CAREG_CHECK(v.as_index(x) && x >= lo && x <= hi,
              "profile JSON '" << path << "' must be an integer in [" << lo << ", " << hi << "]");
  return std::size_t(x);
}

const Json& array(const Json& v, const char* path, std::size_t n) {
  CAREG_CHECK(v.type == Json::Array && v.items.size() == n, "profile JSON '" << path << "' must be a list of " << n);
  return v;
}

std::vector<float> as_f32(const Tensor& t) {
  std::size_t n = 1;
  for (auto s : t.shape) n *= s;
  std::vector<float> out(n);
  if (t.dtype == DType::F32) std::memcpy(out.data(), t.as<float>(), n * sizeof(float));
  else half_to_float_row(t.as<std::uint16_t>(), out.data(), n);
  return out;
}

}  // namespace

Layout layout_of(const Profile& p) {
  const Json& f = member(info_of(p), "features", "features");
  Layout l;
  const Json& ch = array(member(f, "channels", "features.channels"), "features.channels", 3);
  for (int k = 0; k < 3; ++k) l.channels[k] = count(ch.items[k], "features.channels", 1, 65536);
  const Json& in = array(member(f, "input_size", "features.input_size"), "features.input_size", 2);
  l.input_h = count(in.items[0], "features.input_size", 1, 65536);
  l.input_w = count(in.items[1], "features.input_size", 1, 65536);
  l.grid_stride = count(member(f, "grid_stride", "features.grid_stride"), "features.grid_stride", 1, 65536);
  const Json& mode = member(f, "mode", "features.mode");
  CAREG_CHECK(mode.type == Json::String && (mode.text == "unwarp" || mode.text == "registered"),
              "profile JSON 'features.mode' must be 'unwarp' or 'registered'");
  l.mode = mode.text == "unwarp" ? Mode::Unwarp : Mode::Registered;
  const Json& agg = member(f, "aggregate", "features.aggregate");
  CAREG_CHECK(agg.type == Json::Bool, "profile JSON 'features.aggregate' must be true or false");
  l.aggregate = agg.text == "true";
  if (const Tensor* ci = p.tensor("channel_index"))
    l.channel_index.assign(ci->as<std::int64_t>(), ci->as<std::int64_t>() + ci->shape[0]);
  if (const Tensor* pr = p.tensor("projection")) {
    l.projection = as_f32(*pr);
    l.proj_dim = pr->shape[1];
    CAREG_CHECK(pr->shape[0] == l.d_in(), "profile tensor projection has " << pr->shape[0] << " rows, the encoder has "
                                                                           << l.d_in() << " channels (features.channels)");
  }
  l.validate();
  CAREG_CHECK(l.grid_h() == p.grid_h && l.grid_w() == p.grid_w,
              "profile: features.input_size / grid_stride give a " << l.grid_h() << "x" << l.grid_w()
                                                                   << " grid but metadata grid_h x grid_w is " << p.grid_h
                                                                   << "x" << p.grid_w);
  CAREG_CHECK(l.dim() == p.feature_dim(), "profile: channel_index/projection give D = " << l.dim()
                                                                                       << " but the estimator tensors have D = "
                                                                                       << p.feature_dim());
  return l;
}

Scorer scorer_of(const Profile& p) {
  Scorer s;
  s.grid_h = p.grid_h;
  s.grid_w = p.grid_w;
  s.image_h = p.image_h;
  s.image_w = p.image_w;
  s.sigma = p.sigma;
  s.dim = p.feature_dim();
  CAREG_CHECK(parse_rule(p.image_score(), s.rule, s.percent), "profile image_score '" << p.image_score() << "' is unknown");
  const EstimatorRow* row = estimator_row(p.estimator);
  CAREG_CHECK(row, "profile estimator '" << p.estimator << "' is not " << estimator_names());
  s.estimator = row->estimator;
  if (row->kernel == Kernel::NearestBank) {
    s.bank = as_f32(*p.tensor("bank"));
    const Tensor& pos = *p.tensor("bank_pos");
    s.bank_pos.assign(pos.as<std::int32_t>(), pos.as<std::int32_t>() + pos.shape[0]);
    const Json* params = p.info_ok() ? p.info().find("estimator_params") : nullptr;
    if (params && params->type == Json::Object) {
      if (const Json* v = params->find("search")) {
        CAREG_CHECK(v->type == Json::String && (v->text == "global" || v->text == "local"),
                    "profile JSON 'estimator_params.search' must be 'global' or 'local'");
        s.local = v->text == "local";
      }
      if (const Json* v = params->find("radius")) s.radius = count(*v, "estimator_params.radius", 0, 65536);
      if (const Json* v = params->find("reweight_k"))
        s.reweight_k = count(*v, "estimator_params.reweight_k", 1, 1000000);
    }
  } else {
    const Tensor& mean = *p.tensor("mean");
    s.mean.assign(mean.as<float>(), mean.as<float>() + mean.shape[0] * mean.shape[1]);
    const Tensor& f = *p.tensor("precision_factor");
    std::size_t n = f.shape[0] * f.shape[1];
    if (f.dtype == DType::F16) s.factor16.assign(f.as<std::uint16_t>(), f.as<std::uint16_t>() + n);
    else s.factor32.assign(f.as<float>(), f.as<float>() + n);
  }
  s.validate();
  return s;
}

Normalisation normalisation_of(const Profile& p) {
  const Json& n = member(info_of(p), "normalisation", "normalisation");
  Normalisation out;
  const Json& m = array(member(n, "mean", "normalisation.mean"), "normalisation.mean", 3);
  const Json& sd = array(member(n, "std", "normalisation.std"), "normalisation.std", 3);
  for (int c = 0; c < 3; ++c) {
    out.mean[c] = float(number(m.items[c], "normalisation.mean"));
    out.std[c] = float(number(sd.items[c], "normalisation.std"));
    CAREG_CHECK(out.std[c] != 0.f, "profile JSON 'normalisation.std' must not contain 0");
  }
  out.scale = float(number(member(n, "scale", "normalisation.scale"), "normalisation.scale"));
  return out;
}

}  // namespace careg
