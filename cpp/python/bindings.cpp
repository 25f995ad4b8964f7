// The only file that knows Python: zero-copy NumPy views onto the C++ core.
// Dtype/layout mistakes raise ValueError (a silent copy would hide a 2x slowdown
// on the hot path); size disagreements raise careg_edge.CaregError via CAREG_CHECK.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "careg/affine.h"
#include "careg/anomaly_map.h"
#include "careg/blur.h"
#include "careg/error.h"
#include "careg/info.h"
#include "careg/knn.h"
#include "careg/mahalanobis.h"
#include "careg/sqdist.h"

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

py::array pairwise_sqdist(const py::array& a, const py::array& b) {
  const float *pa = f32(a, "a", 2), *pb = f32(b, "b", 2);
  CAREG_CHECK(dim(a, 1) == dim(b, 1), "pairwise_sqdist: a and b must have the same feature dimension");
  auto out = empty<float>({dim(a, 0), dim(b, 0)});
  float* po = out.mutable_data();
  py::gil_scoped_release release;
  careg::pairwise_sqdist(pa, dim(a, 0), pb, dim(b, 0), dim(a, 1), po);
  return out;
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
  m.def("default_threads", &careg::default_threads);
  m.def("pairwise_sqdist", &pairwise_sqdist, py::arg("a"), py::arg("b"),
        "Squared L2 distances between rows of a [n,d] and b [m,d] -> [n,m]");
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
