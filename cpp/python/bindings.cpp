// The only file that knows Python: zero-copy NumPy views onto the C++ core.
// Dtype/layout mistakes raise ValueError (a silent copy would hide a 2x slowdown
// on the hot path); size disagreements raise careg_edge.CaregError via CAREG_CHECK.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "careg/affine.h"
#include "careg/anomaly_map.h"
#include "careg/blur.h"
#include "careg/error.h"
#include "careg/fit.h"
#include "careg/info.h"
#include "careg/knn.h"
#include "careg/mahalanobis.h"
#include "careg/road.h"

namespace py = pybind11;
using std::size_t;

namespace {

void require_layout(const py::array& a, const char* name, py::ssize_t ndim, char kind,
                    py::ssize_t itemsize, const char* dtype) {
  if (!(a.flags() & py::array::c_style) || a.dtype().kind() != kind || a.itemsize() != itemsize)
    throw py::value_error(std::string(name) + " must be a C-contiguous " + dtype +
                          " array (use np.ascontiguousarray(x, dtype=np." + dtype + "))");
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + " must have " + std::to_string(ndim) +
                          " dimensions, got " + std::to_string(a.ndim()));
}

const float* f32(const py::array& a, const char* name, py::ssize_t ndim) {
  require_layout(a, name, ndim, 'f', 4, "float32");
  return static_cast<const float*>(a.data());
}

size_t dim(const py::array& a, int i) { return static_cast<size_t>(a.shape(i)); }

template <class T>
py::array_t<T> empty(std::initializer_list<size_t> shape) {
  return py::array_t<T>(std::vector<py::ssize_t>(shape.begin(), shape.end()));
}

py::array mahalanobis(const py::array& x, const py::array& mean, const py::array& factor,
                      int threads) {
  const float* px = f32(x, "x", 3);
  const float* pm = f32(mean, "mean", 2);
  careg::Storage st = careg::Storage::F32;
  if (factor.dtype().kind() == 'f' && factor.itemsize() == 2) {
    require_layout(factor, "factor", 2, 'f', 2, "float16");
    st = careg::Storage::F16;
  } else {
    require_layout(factor, "factor", 2, 'f', 4, "float32");
  }
  size_t B = dim(x, 0), P = dim(x, 1), D = dim(x, 2);
  CAREG_CHECK(dim(mean, 0) == P && dim(mean, 1) == D,
              "mahalanobis: mean must be [P, D] = [" << P << ", " << D << "] like x, got ["
                                                     << dim(mean, 0) << ", " << dim(mean, 1) << "]");
  CAREG_CHECK(dim(factor, 0) == P && dim(factor, 1) == careg::packed_size(D),
              "mahalanobis: factor must be [P, D(D+1)/2] = [" << P << ", " << careg::packed_size(D)
                                                              << "], got [" << dim(factor, 0) << ", "
                                                              << dim(factor, 1) << "]");
  auto out = empty<float>({B, P});
  float* po = out.mutable_data();
  const void* pf = factor.data();
  py::gil_scoped_release release;
  careg::mahalanobis(px, B, P, D, pm, pf, st, po, threads);
  return out;
}

py::tuple knn(const py::array& q, const py::array& bank, int k, int threads) {
  const float *pq = f32(q, "q", 2), *pb = f32(bank, "bank", 2);
  CAREG_CHECK(dim(q, 1) == dim(bank, 1), "knn: q has D=" << dim(q, 1) << " but bank has D=" << dim(bank, 1));
  CAREG_CHECK(k >= 1, "knn: k must be >= 1, got " << k);
  size_t N = dim(q, 0), kk = size_t(k);
  auto d = empty<float>({N, kk});
  auto i = empty<std::int64_t>({N, kk});
  float* pd = d.mutable_data();
  std::int64_t* pi = i.mutable_data();
  {
    py::gil_scoped_release release;
    careg::knn(pq, N, pb, dim(bank, 0), dim(q, 1), kk, pd, pi, threads);
  }
  return py::make_tuple(d, i);
}

py::tuple knn_local(const py::array& q, const py::array& bank, const py::array& bank_pos,
                    int grid_h, int grid_w, int radius, int k, int threads) {
  const float *pq = f32(q, "q", 3), *pb = f32(bank, "bank", 2);
  require_layout(bank_pos, "bank_pos", 1, 'i', 4, "int32");
  CAREG_CHECK(dim(q, 2) == dim(bank, 1), "knn_local: q has D=" << dim(q, 2) << " but bank has D=" << dim(bank, 1));
  CAREG_CHECK(dim(bank_pos, 0) == dim(bank, 0), "knn_local: bank_pos must have one entry per bank row ("
                                                    << dim(bank, 0) << "), got " << dim(bank_pos, 0));
  CAREG_CHECK(grid_h > 0 && grid_w > 0 && radius >= 0 && k >= 1,
              "knn_local: need grid_h, grid_w, k >= 1 and radius >= 0");
  size_t B = dim(q, 0), P = dim(q, 1), kk = size_t(k);
  auto d = empty<float>({B, P, kk});
  auto i = empty<std::int64_t>({B, P, kk});
  float* pd = d.mutable_data();
  std::int64_t* pi = i.mutable_data();
  const auto* pp = static_cast<const std::int32_t*>(bank_pos.data());
  {
    py::gil_scoped_release release;
    careg::knn_local(pq, B, P, dim(q, 2), pb, dim(bank, 0), pp, size_t(grid_h), size_t(grid_w),
                     size_t(radius), kk, pd, pi, threads);
  }
  return py::make_tuple(d, i);
}

void check_theta_shape(const py::array& t, size_t B, const char* name) {
  CAREG_CHECK(dim(t, 0) == B && dim(t, 1) == 2 && dim(t, 2) == 3,
              name << " must be [B, 2, 3] with B = " << B << ", got [" << dim(t, 0) << ", "
                   << dim(t, 1) << ", " << dim(t, 2) << "]");
}

py::array affine_sample(const py::array& src, const py::array& theta, int out_h, int out_w,
                        int threads) {
  const float *ps = f32(src, "src", 4), *pt = f32(theta, "theta", 3);
  size_t B = dim(src, 0), C = dim(src, 1);
  check_theta_shape(theta, B, "affine_sample: theta");
  CAREG_CHECK(out_h >= 0 && out_w >= 0, "affine_sample: out_h and out_w must be >= 0");
  auto out = empty<float>({B, C, size_t(out_h), size_t(out_w)});
  float* po = out.mutable_data();
  py::gil_scoped_release release;
  careg::affine_sample(ps, B, C, dim(src, 2), dim(src, 3), pt, size_t(out_h), size_t(out_w), po,
                       threads);
  return out;
}

py::array gaussian_blur(const py::array& maps, float sigma, int threads) {
  const float* pm = f32(maps, "maps", 3);
  auto out = empty<float>({dim(maps, 0), dim(maps, 1), dim(maps, 2)});
  float* po = out.mutable_data();
  py::gil_scoped_release release;
  careg::gaussian_blur(pm, dim(maps, 0), dim(maps, 1), dim(maps, 2), sigma, po, threads);
  return out;
}

py::tuple anomaly_map(const py::array& reg, const py::object& theta_inv, int out_h, int out_w,
                      float sigma, int threads) {
  const float* pr = f32(reg, "reg", 3);
  size_t B = dim(reg, 0);
  const float* pt = nullptr;
  if (!theta_inv.is_none()) {
    py::array t = theta_inv.cast<py::array>();
    pt = f32(t, "theta_inv", 3);
    check_theta_shape(t, B, "anomaly_map: theta_inv");
  }
  CAREG_CHECK(out_h > 0 && out_w > 0, "anomaly_map: out_h and out_w must be >= 1");
  auto maps = empty<float>({B, size_t(out_h), size_t(out_w)});
  auto score = empty<float>({B});
  float *pm = maps.mutable_data(), *ps = score.mutable_data();
  {
    py::gil_scoped_release release;
    careg::anomaly_map(pr, B, dim(reg, 1), dim(reg, 2), pt, size_t(out_h), size_t(out_w), sigma,
                       pm, ps, threads);
  }
  return py::make_tuple(maps, score);
}


// ---- the road ---------------------------------------------------------------------

std::shared_ptr<careg::Layout> make_layout(std::vector<size_t> channels, std::vector<size_t> input_size,
                                           size_t grid_stride, const std::string& mode, bool aggregate,
                                           const py::object& channel_index, const py::object& projection) {
  CAREG_CHECK(channels.size() == 3, "features.channels must list 3 stages, got " << channels.size());
  CAREG_CHECK(input_size.size() == 2, "features.input_size must be (H, W)");
  CAREG_CHECK(mode == "unwarp" || mode == "registered",
              "localisation mode '" << mode << "' is not 'unwarp' or 'registered'");
  auto l = std::make_shared<careg::Layout>();
  for (int k = 0; k < 3; ++k) l->channels[k] = channels[k];
  l->input_h = input_size[0];
  l->input_w = input_size[1];
  l->grid_stride = grid_stride;
  l->mode = mode == "unwarp" ? careg::Mode::Unwarp : careg::Mode::Registered;
  l->aggregate = aggregate;
  if (!channel_index.is_none()) {
    py::array ci = channel_index.cast<py::array>();
    require_layout(ci, "channel_index", 1, 'i', 8, "int64");
    const auto* p = static_cast<const std::int64_t*>(ci.data());
    l->channel_index.assign(p, p + dim(ci, 0));
  }
  if (!projection.is_none()) {
    py::array pr = projection.cast<py::array>();
    const float* p = f32(pr, "projection", 2);
    CAREG_CHECK(dim(pr, 0) == l->d_in(), "projection has " << dim(pr, 0) << " rows, the encoder has "
                                                          << l->d_in() << " channels (features.channels)");
    l->projection.assign(p, p + dim(pr, 0) * dim(pr, 1));
    l->proj_dim = dim(pr, 1);
  }
  l->validate();
  return l;
}

template <class T>
void copy_tensor(const py::dict& t, const char* name, int ndim, char kind, std::vector<T>& out,
                 std::vector<size_t>& shape) {
  CAREG_CHECK(t.contains(name), "profile lacks tensor '" << name << "'; re-enroll");
  py::array a = t[name].cast<py::array>();
  require_layout(a, name, ndim, kind, sizeof(T), kind == 'i' ? "int32" : (sizeof(T) == 2 ? "float16" : "float32"));
  shape.assign(a.shape(), a.shape() + a.ndim());
  out.resize(size_t(a.size()));
  if (!out.empty()) std::memcpy(out.data(), a.data(), out.size() * sizeof(T));
}

std::shared_ptr<careg::Scorer> make_scorer(const std::string& estimator, std::vector<size_t> grid,
                                           std::vector<size_t> image_size, float sigma, const std::string& rule,
                                           const py::dict& tensors, const std::string& search, long radius,
                                           long reweight_k) {
  CAREG_CHECK(grid.size() == 2 && image_size.size() == 2, "grid and image_size must be (H, W)");
  auto s = std::make_shared<careg::Scorer>();
  s->grid_h = grid[0];
  s->grid_w = grid[1];
  s->image_h = image_size[0];
  s->image_w = image_size[1];
  s->sigma = sigma;
  CAREG_CHECK(careg::parse_rule(rule, s->rule, s->percent),
              "image score '" << rule << "': use max, mean or top<P>% with 0 < P <= 100");
  std::vector<size_t> shape;
  const size_t P = s->positions();
  const careg::EstimatorRow* row = careg::estimator_row(estimator);
  CAREG_CHECK(row, "estimator '" << estimator << "' is not " << careg::estimator_names());
  s->estimator = row->estimator;
  if (row->kernel == careg::Kernel::NearestBank) {
    copy_tensor(tensors, "bank", 2, 'f', s->bank, shape);
    s->dim = shape[1];
    CAREG_CHECK(shape[0] >= 1 && s->dim >= 1, "profile tensor bank must be a non-empty [M, D]");
    copy_tensor(tensors, "bank_pos", 1, 'i', s->bank_pos, shape);
    CAREG_CHECK(search == "global" || search == "local", "search: '" << search << "' is not 'global' or 'local'");
    s->local = search == "local";
    CAREG_CHECK(radius >= 0 && reweight_k >= 1, "radius must be >= 0 and reweight_k >= 1");
    s->radius = size_t(radius);
    s->reweight_k = size_t(reweight_k);
  } else {
    copy_tensor(tensors, "mean", 2, 'f', s->mean, shape);
    s->dim = shape.size() == 2 ? shape[1] : 0;
    CAREG_CHECK(shape[0] == P, "profile tensor mean has " << shape[0] << " positions, the grid has " << P);
    CAREG_CHECK(tensors.contains("precision_factor"), "profile lacks tensor 'precision_factor'; re-enroll");
    py::array f = tensors["precision_factor"].cast<py::array>();
    if (f.dtype().kind() == 'f' && f.itemsize() == 2) copy_tensor(tensors, "precision_factor", 2, 'f', s->factor16, shape);
    else copy_tensor(tensors, "precision_factor", 2, 'f', s->factor32, shape);
  }
  s->validate();
  return s;
}

careg::Outputs outputs_of(const py::dict& out, std::vector<py::array>& keep) {
  careg::Outputs o;
  const char* names[3] = {"feat1", "feat2", "feat3"};
  for (int k = 0; k < 3; ++k) {
    CAREG_CHECK(out.contains(names[k]), "encoder outputs lack '" << names[k] << "'");
    keep.push_back(out[names[k]].cast<py::array>());
    const py::array& a = keep.back();
    o.feat[k] = f32(a, names[k], 4);
    if (k == 0) o.batch = dim(a, 0);
    CAREG_CHECK(dim(a, 0) == o.batch, names[k] << " has batch " << dim(a, 0) << ", feat1 has " << o.batch);
    o.channels[k] = dim(a, 1);
    o.height[k] = dim(a, 2);
    o.width[k] = dim(a, 3);
  }
  for (const char* name : {"theta", "theta_inv"}) {
    CAREG_CHECK(out.contains(name), "encoder outputs lack '" << name << "'");
    keep.push_back(out[name].cast<py::array>());
    const py::array& a = keep.back();
    const float* p = f32(a, name, 4);
    CAREG_CHECK(dim(a, 0) == o.batch && dim(a, 1) == 3 && dim(a, 2) == 2 && dim(a, 3) == 3,
                name << " must be [B, 3, 2, 3] with B = " << o.batch << ", got [" << dim(a, 0) << ", " << dim(a, 1)
                     << ", " << dim(a, 2) << ", " << dim(a, 3) << "]");
    (std::string(name) == "theta" ? o.theta : o.theta_inv) = p;
  }
  return o;
}

py::array assemble(const careg::Layout& l, const py::dict& out, int threads) {
  std::vector<py::array> keep;
  careg::Outputs o = outputs_of(out, keep);
  auto feats = empty<float>({o.batch, l.positions(), l.dim()});
  float* pf = feats.mutable_data();
  py::gil_scoped_release release;
  careg::assemble(l, o, pf, threads);
  return feats;
}

template <class V>
py::array to_array(const V& v, std::initializer_list<size_t> shape) {
  auto a = empty<typename V::value_type>(shape);
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(typename V::value_type));
  return a;
}

py::dict scores_dict(const careg::Scorer& s, const careg::Scores& r, size_t B) {
  py::dict d;
  d["dist"] = to_array(r.dist, {B, s.grid_h, s.grid_w});
  d["maps"] = to_array(r.maps, {B, s.image_h, s.image_w});
  d["scores"] = to_array(r.scores, {B});
  py::dict t;
  t["score"] = r.ms_score;
  t["postprocess"] = r.ms_map;
  d["timings"] = t;
  return d;
}

py::dict score(const careg::Scorer& s, const py::array& feats, const py::object& theta_inv3, int threads) {
  const float* px = f32(feats, "features", 3);
  size_t B = dim(feats, 0);
  CAREG_CHECK(dim(feats, 1) == s.positions() && dim(feats, 2) == s.dim,
              "features are [" << B << ", " << dim(feats, 1) << ", " << dim(feats, 2) << "], the profile expects [B, "
                               << s.positions() << ", " << s.dim << "] (grid positions, feature dimension D)");
  const float* pt = nullptr;
  py::array t;
  if (!theta_inv3.is_none()) {
    t = theta_inv3.cast<py::array>();
    pt = f32(t, "theta_inv", 3);
    check_theta_shape(t, B, "theta_inv (stage 3)");
  }
  careg::Scores r;
  {
    py::gil_scoped_release release;
    careg::score(s, px, B, pt, r, threads);
  }
  return scores_dict(s, r, B);
}

py::dict inspect(const careg::Layout& l, const careg::Scorer& s, const py::dict& out, float threshold,
                 const py::object& sizes, int threads) {
  std::vector<py::array> keep;
  careg::Outputs o = outputs_of(out, keep);
  std::vector<std::pair<size_t, size_t>> at;
  if (!sizes.is_none()) {
    at = sizes.cast<std::vector<std::pair<size_t, size_t>>>();
    CAREG_CHECK(at.size() == o.batch, "sizes: " << at.size() << " entries for a batch of " << o.batch);
  }
  careg::Inspection r;
  std::vector<std::vector<float>> resized(at.size());
  {
    py::gil_scoped_release release;
    careg::inspect(l, s, o, threshold, r, threads);
    for (size_t b = 0; b < at.size(); ++b) {
      resized[b].resize(at[b].first * at[b].second);
      careg::resize_map(r.maps.data() + b * s.image_h * s.image_w, s.image_h, s.image_w, at[b].first,
                        at[b].second, resized[b].data());
    }
  }
  py::dict d = scores_dict(s, r, o.batch);
  py::dict t = d["timings"];
  t["features"] = r.ms_features;
  std::vector<bool> defect(r.defect.begin(), r.defect.end());
  d["defect"] = defect;
  d["reason"] = r.reason;
  py::list maps_at;
  for (size_t b = 0; b < at.size(); ++b) maps_at.append(to_array(resized[b], {at[b].first, at[b].second}));
  d["maps_at"] = maps_at;
  return d;
}

py::tuple gaussian_factor(const py::array& x, double eps, int threads) {
  const float* px = f32(x, "features", 3);
  size_t N = dim(x, 0), P = dim(x, 1), D = dim(x, 2);
  auto mean = empty<float>({P, D});
  auto fac = empty<float>({P, careg::packed_size(D)});
  float *pm = mean.mutable_data(), *pf = fac.mutable_data();
  {
    py::gil_scoped_release release;
    careg::gaussian_factor(px, N, P, D, eps, pm, pf, threads);
  }
  return py::make_tuple(mean, fac);
}

py::tuple greedy_coreset(const py::array& z, size_t m, size_t first) {
  const float* pz = f32(z, "z", 2);
  CAREG_CHECK(m >= 1 && m <= dim(z, 0) && first < dim(z, 0),
              "greedy_coreset: need 1 <= m <= " << dim(z, 0) << " and first < " << dim(z, 0));
  auto idx = empty<std::int64_t>({m});
  std::int64_t* pi = idx.mutable_data();
  float radius;
  {
    py::gil_scoped_release release;
    radius = careg::greedy_coreset(pz, dim(z, 0), dim(z, 1), m, first, pi);
  }
  return py::make_tuple(idx, radius);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "careg-edge compiled scoring core (see DEVELOPERS.md, 'Compiled core')";
  // careg::Error surfaces as careg_edge.CaregError (one error type for users).
  py::object caregerr = py::module_::import("careg_edge.errors").attr("CaregError");
  static py::handle err_type = caregerr.release();
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const careg::Error& e) {
      PyErr_SetString(err_type.ptr(), e.what());
    }
  });
  m.def("build_flags", &careg::build_flags);
  m.def("estimator_names", [] {
    std::vector<std::string> names;
    for (const careg::EstimatorRow& r : careg::estimator_rows()) names.push_back(r.name);
    return names;
  }, "The estimators the compiled road scores (its table in road_score.cpp), in order");
  py::class_<careg::Layout, std::shared_ptr<careg::Layout>>(m, "Layout",
      "Feature assembly of a profile (immutable): channels, input size, grid stride, mode, aggregate, "
      "channel_index or projection")
      .def(py::init(&make_layout), py::arg("channels"), py::arg("input_size"), py::arg("grid_stride"),
           py::arg("mode"), py::arg("aggregate"), py::arg("channel_index") = py::none(),
           py::arg("projection") = py::none())
      .def_property_readonly("dim", &careg::Layout::dim)
      .def_property_readonly("grid", [](const careg::Layout& l) { return py::make_tuple(l.grid_h(), l.grid_w()); });
  py::class_<careg::Scorer, std::shared_ptr<careg::Scorer>>(m, "Scorer",
      "Estimator state + map + image-score rule of a profile (immutable; tensors are copied)")
      .def(py::init(&make_scorer), py::arg("estimator"), py::arg("grid"), py::arg("image_size"), py::arg("sigma"),
           py::arg("rule"), py::arg("tensors"), py::arg("search") = "global", py::arg("radius") = 2,
           py::arg("reweight_k") = 9)
      .def_property_readonly("dim", [](const careg::Scorer& s) { return s.dim; });
  m.def("gaussian_factor", &gaussian_factor, py::arg("x"), py::arg("eps"), py::arg("threads") = 0,
        "x [N,P,D] -> (mean [P,D], packed lower L with L L^T = (cov + eps I)^-1 [P,D(D+1)/2])");
  m.def("greedy_coreset", &greedy_coreset, py::arg("z"), py::arg("m"), py::arg("first"),
        "z [n,k] -> (indices [m] of a greedy k-centre coreset starting at `first`, covering radius)");
  m.def("assemble", &assemble, py::arg("layout"), py::arg("outputs"), py::arg("threads") = 0,
        "raw encoder outputs {feat1..3, theta, theta_inv} -> features [B, P, D]");
  m.def("score", &score, py::arg("scorer"), py::arg("features"), py::arg("theta_inv") = py::none(),
        py::arg("threads") = 0,
        "features [B,P,D], stage-3 theta_inv [B,2,3] or None -> {dist, maps, scores, timings}");
  m.def("inspect", &inspect, py::arg("layout"), py::arg("scorer"), py::arg("outputs"), py::arg("threshold"),
        py::arg("sizes") = py::none(), py::arg("threads") = 0,
        "the road: raw encoder outputs -> {dist, maps, scores, defect, reason, maps_at, timings}");
  m.def("default_threads", &careg::default_threads);
  m.def("mahalanobis", &mahalanobis, py::arg("x"), py::arg("mean"), py::arg("factor"),
        py::arg("threads") = 0,
        "x [B,P,D], mean [P,D], factor [P,D(D+1)/2] f32|f16 -> distances [B,P]");
  m.def("knn", &knn, py::arg("q"), py::arg("bank"), py::arg("k"), py::arg("threads") = 0,
        "q [N,D], bank [M,D] -> (sqdist [N,k] ascending, idx [N,k] int64)");
  m.def("knn_local", &knn_local, py::arg("q"), py::arg("bank"), py::arg("bank_pos"),
        py::arg("grid_h"), py::arg("grid_w"), py::arg("radius"), py::arg("k"),
        py::arg("threads") = 0,
        "q [B,P,D], bank [M,D], bank_pos [M] int32 -> (sqdist [B,P,k], idx [B,P,k])");
  m.def("affine_sample", &affine_sample, py::arg("src"), py::arg("theta"), py::arg("out_h"),
        py::arg("out_w"), py::arg("threads") = 0,
        "src [B,C,h,w], theta [B,2,3] -> [B,C,out_h,out_w] (bilinear, border, align_corners=False)");
  m.def("gaussian_blur", &gaussian_blur, py::arg("maps"), py::arg("sigma"), py::arg("threads") = 0,
        "maps [B,H,W] -> blurred [B,H,W] (radius ceil(4 sigma), reflect border)");
  m.def("anomaly_map", &anomaly_map, py::arg("reg"), py::arg("theta_inv"), py::arg("out_h"),
        py::arg("out_w"), py::arg("sigma") = 4.0f, py::arg("threads") = 0,
        "reg [B,h,w], theta_inv [B,2,3] or None -> (maps [B,out_h,out_w], max [B])");
}
