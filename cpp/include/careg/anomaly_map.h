// The map stage in one pass: unwarp (inverse affine) + resize, blur, max.
#pragma once
#include <cstddef>

namespace careg {

// reg [B, h, w] registered-frame heatmaps; theta_inv [B, 2, 3] (registered ->
// image, see DEVELOPERS.md) or nullptr for a plain resize. Writes maps
// [B, out_h, out_w] (bilinear, border, then Gaussian blur) and score[b] = max of
// map b. theta_inv must be finite and invertible (|det| > 1e-8). A NaN anywhere
// in a heatmap makes that image's score NaN (a corrupt input must not look good).
void anomaly_map(const float* reg, std::size_t B, std::size_t h, std::size_t w,
                 const float* theta_inv, std::size_t out_h, std::size_t out_w, float sigma,
                 float* maps, float* score, int threads = 0);

}  // namespace careg
