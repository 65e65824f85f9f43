// PNG writing and sample grids.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace gt {

// One model value in [-1, 1] as a byte: round((clamp(x, -1, 1) + 1) * 127.5), half up, NaN -> 0. The inverse of
// the dataset's v / 127.5 - 1 (every byte comes back exactly); sample grids and eval/swd use it.
inline uint8_t float_to_pixel(float x) {
  const float clamped = x >= -1.f ? (x <= 1.f ? x : 1.f) : -1.f;
  return static_cast<uint8_t>((clamped + 1.f) * 127.5f + 0.5f);
}

// Encodes 8-bit gray (c=1), RGB (c=3) or RGBA (c=4) pixels, row-major HWC, as the bytes of a PNG file.
std::string encode_png(const uint8_t* hwc, int height, int width, int channels);

// Writes encoded bytes to `path` through "<path>.tmp" and a rename (RuntimeError naming the file).
void write_png_bytes(const std::string& path, const std::string& png);

// encode_png + write_png_bytes.
void write_png(const std::string& path, const uint8_t* hwc, int height, int width, int channels);

// Tiles images (f32 [N, C, H, W] in [-1, 1]) into one uint8 HWC grid of `nrow` images per row with
// `padding` pixels between them (like torchvision.utils.make_grid with normalize to [-1,1]).
// Pixels are round((clamp(x, -1, 1) + 1) * 127.5), NaN -> 0. Borders and empty cells are mid-gray (128), not
// torchvision's black, so cells stay visible on dark backgrounds.
// Returns the pixels and sets height/width/channels (1 -> gray, 3 -> RGB).
std::vector<uint8_t> make_grid(const Tensor& images, int nrow, int padding, int* height, int* width, int* channels);

// An encoded grid and its size, for writers that take PNG bytes as they are (TensorBoard's image summaries).
struct PngGrid {
  std::string png;
  int height = 0, width = 0, channels = 0;
};

// make_grid + write_png; returns the bytes it wrote.
PngGrid write_grid_png(const std::string& path, const Tensor& images, int nrow, int padding = 2);

}  // namespace gt
