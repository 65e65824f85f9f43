// Cropping and antialiased resizing of 8-bit HWC images (the ingest's only resampling step).
#pragma once
#include <cstdint>

namespace gt {

// A rectangle of an image in pixels: columns [x, x + w), rows [y, y + h).
struct CropBox {
  int x = 0, y = 0, w = 0, h = 0;
};

// The largest centered square of a height x width image (an odd margin puts the extra pixel at the end).
CropBox center_square(int height, int width);

// Resamples `box` of src (src_h x src_w x channels, row-major HWC) to dst (out_h x out_w x channels).
// Each axis uses a triangle filter whose support grows with the reduction factor (support = max(1,
// in/out) pixels each side of the sample point), so shrinking averages every source pixel it covers
// (antialiased, as PIL's and torchvision's "bilinear" resize) and enlarging is plain bilinear
// interpolation with edge pixels repeated. Sample points are pixel centers: out pixel i sits at
// (i + 0.5) * in / out in the box. Results are rounded to nearest. The box must lie inside src.
void resize_box(const uint8_t* src, int src_h, int src_w, int channels, CropBox box, int out_h, int out_w,
                uint8_t* dst);

}  // namespace gt
