// The one road from raw encoder outputs to a verdict, used by the Python binding
// (careg_edge.scoring) and by the C API (careg_inspect) alike:
//
//   assemble   feat1..3 [B, C_k, h_k, w_k] + theta/theta_inv [B, 3, 2, 3]
//              -> features [B, P, D] (channel_index or projection, stage resampling
//              per localisation mode, PatchCore 3x3 aggregation)
//   score      features -> distances [B, P] (Mahalanobis | kNN global/local with
//              fallback), anomaly maps [B, image_h, image_w] (unwarp, blur), image
//              score per rule (max | mean | top<P>%; PatchCore + max: Eq. 7)
//   inspect    both, plus the verdict against a threshold given per call.
//
// Layout and Scorer own copies of every tensor they use and are immutable once
// built: any number of threads may call assemble/score/inspect on them at once.
// Every size is checked; a wrong size or a non-finite encoder output throws
// careg::Error naming the field.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "careg/mahalanobis.h"

namespace careg {

enum class Mode { Unwarp, Registered };

// Feature assembly: everything profile.features + channel_index/projection say.
struct Layout {
  std::size_t channels[3] = {0, 0, 0};  // C of feat1..3 as the encoder emits them
  std::size_t input_h = 0, input_w = 0, grid_stride = 0;
  Mode mode = Mode::Unwarp;
  bool aggregate = false;                // PatchCore: mean over 3x3 cells, edge replicated
  std::vector<std::int64_t> channel_index;  // indices into feat1|feat2|feat3 (or empty)
  std::vector<float> projection;            // [Din, D] row-major (or empty)
  std::size_t proj_dim = 0;                 // D of the projection

  std::size_t d_in() const { return channels[0] + channels[1] + channels[2]; }
  std::size_t grid_h() const { return grid_stride ? input_h / grid_stride : 0; }
  std::size_t grid_w() const { return grid_stride ? input_w / grid_stride : 0; }
  std::size_t positions() const { return grid_h() * grid_w(); }
  std::size_t dim() const;               // D of the assembled features
  void validate() const;                 // throws naming the field
};

// Raw encoder outputs of one batch (views, not owned).
struct Outputs {
  std::size_t batch = 0;
  const float* feat[3] = {nullptr, nullptr, nullptr};
  std::size_t channels[3] = {0, 0, 0}, height[3] = {0, 0, 0}, width[3] = {0, 0, 0};
  const float* theta = nullptr;      // [B, 3, 2, 3]
  const float* theta_inv = nullptr;  // [B, 3, 2, 3]
};

// features [B, P, D]; throws on shape mismatch or non-finite outputs (naming them).
void assemble(const Layout& layout, const Outputs& out, float* features, int threads = 0);

enum class Estimator { PaDiM, OrthoAD, PatchCore };
// How a Scorer's state is held and scored (road_score.cpp): a Gaussian per position
// (mean + packed precision factor) or a memory bank searched for the nearest row.
// The readers (profile_score.cpp, profile_road.cpp, bindings.cpp) load by kernel.
enum class Kernel { Mahalanobis, NearestBank };

// The estimators the road scores, one row each, by the name profiles and the Python
// binding use (careg_edge.estimators.registry names the same; a test holds them
// equal). An estimator scored by an existing kernel is its enum value and its row.
struct EstimatorRow {
  const char* name;
  Estimator estimator;
  Kernel kernel;
};
const std::vector<EstimatorRow>& estimator_rows();
const EstimatorRow* estimator_row(const std::string& name);  // nullptr if unknown
Kernel kernel_of(Estimator e);
std::string estimator_names();  // "padim, orthoad or patchcore", for messages
enum class Rule { Max, Mean, Top };

// Parses "max" | "mean" | "top<P>%" (digits[.digits], 0 < P <= 100); false if not.
bool parse_rule(const std::string& s, Rule& rule, double& percent);

struct Scorer {
  Estimator estimator = Estimator::PaDiM;
  std::size_t grid_h = 0, grid_w = 0, dim = 0;
  std::size_t image_h = 0, image_w = 0;
  float sigma = 4.f;
  Rule rule = Rule::Max;
  double percent = 0.0;   // top<P>%: P; mean: 100
  // PaDiM / OrthoAD
  std::vector<float> mean;                       // [P, D]
  std::vector<std::uint16_t> factor16;           // [P, D(D+1)/2] when fp16
  std::vector<float> factor32;                   // [P, D(D+1)/2] when fp32
  // PatchCore
  std::vector<float> bank;                       // [M, D]
  std::vector<std::int32_t> bank_pos;            // [M]
  bool local = false;
  std::size_t radius = 2, reweight_k = 9;

  std::size_t positions() const { return grid_h * grid_w; }
  std::size_t bank_size() const { return dim ? bank.size() / dim : 0; }
  void validate() const;  // throws naming the field
};

// Inspection-time overrides of the Scorer's PatchCore search (-1: the Scorer's own).
struct RoadOptions {
  int search = -1;   // 0 global, 1 local
  long radius = -1;
};

// Per-batch results. maps are in the image_h x image_w frame of the scorer.
struct Scores {
  std::vector<float> dist, maps, scores;
  double ms_score = 0, ms_map = 0;  // distances; map + image score
};

// features [B, P, D] -> distances, maps, image scores. theta_inv3 [B, 2, 3]: the
// stage-3 theta_inv for the heatmap unwarp (registered mode) or nullptr.
void score(const Scorer& s, const float* features, std::size_t B, const float* theta_inv3,
           Scores& out, int threads = 0, const RoadOptions* opt = nullptr);

// Verdict of one image score: defect when score > threshold or not finite; `reason`
// says which, in one line.
bool verdict(float score, float threshold, std::string& reason);

struct Inspection : Scores {
  std::vector<std::uint8_t> defect;
  std::vector<std::string> reason;
  double ms_features = 0;  // assembly time (ms_score, ms_map: see Scores)
};

// The road: raw outputs -> assembled features -> scores -> verdicts. The Layout's
// assembled D must equal the Scorer's and its grid the Scorer's grid.
void inspect(const Layout& layout, const Scorer& scorer, const Outputs& out, float threshold,
             Inspection& result, int threads = 0, const RoadOptions* opt = nullptr);

// Bilinear resize of one map [h, w] -> [out_h, out_w] (align_corners=False, border).
void resize_map(const float* map, std::size_t h, std::size_t w, std::size_t out_h,
                std::size_t out_w, float* out);

}  // namespace careg
