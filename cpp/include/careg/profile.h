// The .careg profile (careg_edge.container kind "careg-profile" v1), read as
// untrusted input: every length, offset, dtype, shape and the CRC-32 checksum
// is validated against the file size before anything is used. Spec:
// careg_edge/container.py, DEVELOPERS.md "Profile", docs/profile-format.md.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "careg/error.h"

namespace careg {

// Why a file was refused; maps one-to-one onto the C API status codes.
enum class FileProblem { Io = 2, Format = 3, Checksum = 4, Version = 5, Kind = 6 };

struct FileError : Error {
  FileProblem problem;
  FileError(FileProblem p, const std::string& msg) : Error(msg), problem(p) {}
};

enum class DType { F32, F16, F64, I64, I32, U8 };

struct Tensor {
  DType dtype;
  std::vector<std::size_t> shape;
  std::vector<std::uint64_t> storage;  // 8-byte aligned copy of the little-endian bytes
  std::size_t nbytes = 0;
  template <class T>
  const T* as() const { return reinterpret_cast<const T*>(storage.data()); }
};

class Profile {
 public:
  static Profile load(const std::string& path);
  static Profile parse(const std::uint8_t* data, std::size_t n, const std::string& where);

  std::string estimator, encoder_hash;
  float threshold = 0.f, sigma = 4.f;
  std::size_t grid_h = 0, grid_w = 0, image_h = 0, image_w = 0;

  std::size_t positions() const { return grid_h * grid_w; }
  // Image-score rule from the optional metadata key `image_score`: "max" (also when
  // absent: older profiles), "mean" or "top<P>%". top_percent() is P, 100 for
  // mean and 0 for max.
  const std::string& image_score() const { return image_score_; }
  double top_percent() const { return top_percent_; }
  std::size_t feature_dim() const { return dim_; }
  const Tensor* tensor(const std::string& name) const;

  // features [B, P, D] (assembled and, for orthoad, projected) -> dist [B, P],
  // maps [B, image_h, image_w], scores [B] (the image-score rule's statistic of
  // each map). theta_inv [B, 2, 3] or nullptr.
  // Const and allocation-local: safe to call from several threads at once.
  void score(const float* features, std::size_t B, std::size_t D, const float* theta_inv,
             float* dist, float* maps, float* scores, int threads) const;

 private:
  void validate(const std::string& where);
  void image_statistic(const float* maps, std::size_t B, float* scores, int threads) const;
  std::map<std::string, Tensor> tensors_;
  std::size_t dim_ = 0;
  std::string image_score_ = "max";
  double top_percent_ = 0.0;
};

}  // namespace careg
