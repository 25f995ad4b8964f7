// The only file that knows Python: zero-copy NumPy views onto the C++ core.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "careg/error.h"
#include "careg/info.h"
#include "careg/sqdist.h"

namespace py = pybind11;
using farr = py::array_t<float, py::array::c_style>;

namespace {

// Refuse anything that is not already C-contiguous float32: a silent copy
// would hide a 2x slowdown on the hot path.
farr require_f32(const py::array& a, const char* name, py::ssize_t ndim) {
  if (!py::isinstance<farr>(a) || !(a.flags() & py::array::c_style) ||
      a.dtype().kind() != 'f' || a.itemsize() != 4)
    throw py::value_error(std::string(name) + " must be a C-contiguous float32 array");
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + " must have " + std::to_string(ndim) +
                          " dimensions, got " + std::to_string(a.ndim()));
  return py::reinterpret_borrow<farr>(a);
}

py::array_t<float> pairwise_sqdist(const py::array& a_in, const py::array& b_in) {
  farr a = require_f32(a_in, "a", 2), b = require_f32(b_in, "b", 2);
  if (a.shape(1) != b.shape(1))
    throw py::value_error("a and b must have the same feature dimension");
  py::array_t<float> out({a.shape(0), b.shape(0)});
  const float* pa = a.data();
  const float* pb = b.data();
  float* po = out.mutable_data();
  std::size_t n = a.shape(0), m = b.shape(0), d = a.shape(1);
  {
    py::gil_scoped_release release;
    careg::pairwise_sqdist(pa, n, pb, m, d, po);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "careg-edge compiled scoring core";
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
}
