// What each estimator needs from a profile, checked once at load (scoring
// itself is the road: road_score.cpp).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "careg/anomaly_map.h"
#include "careg/knn.h"
#include "careg/mahalanobis.h"
#include "careg/parallel.h"
#include "careg/profile.h"
#include "careg/road.h"

namespace careg {
namespace {

[[noreturn]] void refuse(const std::string& where, const std::string& why) {
  throw FileError(FileProblem::Format, where + ": " + why);
}

const Tensor& need(const Profile& p, const std::string& name, const std::string& where) {
  const Tensor* t = p.tensor(name);
  if (!t) refuse(where, p.estimator + " profile lacks tensor '" + name + "'; re-enroll");
  return *t;
}

void expect_shape(const Tensor& t, const std::string& name, std::vector<std::size_t> shape,
                  const std::string& where) {
  if (t.shape != shape) {
    std::string want, got;
    for (auto s : shape) want += (want.empty() ? "" : ", ") + std::to_string(s);
    for (auto s : t.shape) got += (got.empty() ? "" : ", ") + std::to_string(s);
    refuse(where, "tensor '" + name + "' has shape [" + got + "], expected [" + want + "]");
  }
}

}  // namespace

void Profile::validate(const std::string& where) {
  const std::size_t P = positions();
  if (sigma < 0.f || sigma > 1000.f) refuse(where, "metadata 'sigma' must be in [0, 1000]");
  const EstimatorRow* row = estimator_row(estimator);
  if (!row) refuse(where, "unknown estimator '" + estimator + "' (expected " + estimator_names() + ")");
  if (row->kernel == Kernel::Mahalanobis) {
    const Tensor& mean = need(*this, "mean", where);
    if (mean.dtype != DType::F32 || mean.shape.size() != 2) refuse(where, "tensor 'mean' must be F32 [P, D]");
    dim_ = mean.shape[1];
    expect_shape(mean, "mean", {P, dim_}, where);
    const Tensor& f = need(*this, "precision_factor", where);
    if (f.dtype != DType::F32 && f.dtype != DType::F16) refuse(where, "tensor 'precision_factor' must be F32 or F16");
    expect_shape(f, "precision_factor", {P, packed_size(dim_)}, where);
  } else {
    const Tensor& bank = need(*this, "bank", where);
    if (bank.dtype != DType::F32 || bank.shape.size() != 2 || bank.shape[0] == 0)
      refuse(where, "tensor 'bank' must be a non-empty F32 [M, D]");
    dim_ = bank.shape[1];
    const Tensor& pos = need(*this, "bank_pos", where);
    if (pos.dtype != DType::I32) refuse(where, "tensor 'bank_pos' must be I32");
    expect_shape(pos, "bank_pos", {bank.shape[0]}, where);
    for (std::size_t m = 0; m < bank.shape[0]; ++m)
      if (pos.as<std::int32_t>()[m] < 0 || std::size_t(pos.as<std::int32_t>()[m]) >= P)
        refuse(where, "tensor 'bank_pos' has a cell outside the " + std::to_string(grid_h) + "x" +
                          std::to_string(grid_w) + " grid");
  }
  if (const Tensor* ci = tensor("channel_index")) {
    if (ci->dtype != DType::I64 || ci->shape.size() != 1) refuse(where, "tensor 'channel_index' must be I64 [D]");
    for (std::size_t i = 0; i < ci->shape[0]; ++i)
      if (ci->as<std::int64_t>()[i] < 0) refuse(where, "tensor 'channel_index' has a negative index");
  }
  if (const Tensor* pr = tensor("projection"))
    if (pr->dtype != DType::F32 || pr->shape.size() != 2 || pr->shape[1] != dim_)
      refuse(where, "tensor 'projection' must be F32 [Din, D]");
}

}  // namespace careg
