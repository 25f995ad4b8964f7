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
#include "careg/json.h"
#include "careg/road.h"

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

// A careg_edge.container file of one kind/version: tensors + string metadata.
struct Container {
  std::map<std::string, Tensor> tensors;
  Json meta;
};
Container parse_container(const std::uint8_t* data, std::size_t n, const std::string& where, const char* kind,
                          const char* version);
Container read_file(const std::string& path, const char* kind, const char* version);

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

  // The `profile` JSON metadata (features, estimator_params, normalisation, ...).
  // Parsed leniently: a file whose JSON this reader cannot use still loads (and
  // scores assembled features); info_ok() is false and road() names the problem.
  bool info_ok() const { return info_ok_; }
  const Json& info() const { return info_; }

 private:
  void validate(const std::string& where);
  std::map<std::string, Tensor> tensors_;
  Json info_;
  bool info_ok_ = false;
  std::size_t dim_ = 0;
  std::string image_score_ = "max";
  double top_percent_ = 0.0;
};

// The road's inputs from a loaded profile. layout_of needs the `profile` JSON
// (features.*); scorer_of works on the flat keys and tensors alone (PatchCore
// search/radius/reweight_k from estimator_params when present, else the defaults
// global / 2 / 9). Each throws careg::Error naming the missing or bad field.
Layout layout_of(const Profile& p);
Scorer scorer_of(const Profile& p);

struct Normalisation {
  float mean[3], std[3], scale;
};
// input = (rgb * scale - mean) / std per channel, RGB order (profile JSON normalisation).
Normalisation normalisation_of(const Profile& p);

}  // namespace careg
