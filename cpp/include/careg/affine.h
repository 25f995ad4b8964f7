// Bilinear sampling through an affine map, PyTorch affine_grid/grid_sample
// convention (align_corners=False, border padding). With the identity this is a
// bilinear resize; with theta_inv it brings a registered heatmap back to the image.
#pragma once
#include <cstddef>

namespace careg {

// src [B, C, h, w], theta [B, 2, 3] (normalised x, y in [-1, 1]) -> out [B, C, out_h, out_w].
// Output pixel p reads src at theta . [p, 1]; coordinates outside the source are
// clamped to the border (padding_mode="border"). theta must be finite.
void affine_sample(const float* src, std::size_t B, std::size_t C, std::size_t h,
                   std::size_t w, const float* theta, std::size_t out_h, std::size_t out_w,
                   float* out, int threads = 0);

// One output row y of one plane (theta = 6 values, or nullptr for the identity).
void affine_sample_row(const float* plane, std::size_t h, std::size_t w, const float* theta,
                       std::size_t out_h, std::size_t out_w, std::size_t y, float* out_row);

// Throws careg::Error naming `what` if theta[0..6) is not finite.
void check_theta(const float* theta, std::size_t b, const char* what);

}  // namespace careg
