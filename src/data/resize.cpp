// Separable triangle-filter resampling: one vertical pass into a float buffer, one horizontal pass out.
// Written here rather than taken from a library: it is short, and it lets ingest match PIL/torchvision's
// antialiased "bilinear" resize (the filter PyTorch reference pipelines use), checked by tests against a
// naive 2-D sum and, end to end, against torch.nn.functional.interpolate(antialias=True).
#include "data/resize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace gt {

namespace {

// For each output position: the first source index and `taps` normalized weights (zero-padded).
struct AxisFilter {
  int taps = 0;
  std::vector<int> first;
  std::vector<float> weights;  // [out][taps]
};

AxisFilter make_axis_filter(int in, int out) {
  const double scale = static_cast<double>(in) / out;
  const double support = std::max(1.0, scale);  // the triangle's half-width in source pixels
  AxisFilter f;
  f.taps = static_cast<int>(std::ceil(2 * support)) + 2;
  f.first.resize(static_cast<size_t>(out));
  f.weights.assign(static_cast<size_t>(out) * f.taps, 0.0f);
  std::vector<double> w(static_cast<size_t>(f.taps));
  for (int i = 0; i < out; ++i) {
    const double center = (i + 0.5) * scale;
    const int lo = std::max(0, static_cast<int>(std::floor(center - support)));
    const int hi = std::min(in, static_cast<int>(std::ceil(center + support)) + 1);
    GT_CHECK(hi - lo <= f.taps, "filter window of {} taps exceeds {}", hi - lo, f.taps);
    double sum = 0;
    for (int j = lo; j < hi; ++j) {
      const double distance = std::abs(j + 0.5 - center) / support;
      w[j - lo] = std::max(0.0, 1.0 - distance);
      sum += w[j - lo];
    }
    GT_CHECK(sum > 0, "empty filter window at output {}", i);
    f.first[i] = lo;
    for (int j = lo; j < hi; ++j) f.weights[static_cast<size_t>(i) * f.taps + (j - lo)] = static_cast<float>(w[j - lo] / sum);
  }
  return f;
}

uint8_t to_byte(float v) { return static_cast<uint8_t>(std::clamp(static_cast<int>(v + 0.5f), 0, 255)); }

// The horizontal pass: rows [out_h][in_w * channels] of floats to out_w bytes per row. kChannels is
// the channel count when known at compile time, 0 otherwise.
template <int kChannels>
void resize_rows(const float* rows, size_t row_stride, const AxisFilter& fx, int in_w, int out_h, int out_w,
                 int channels, uint8_t* dst) {
  const int C = kChannels > 0 ? kChannels : channels;
  for (int y = 0; y < out_h; ++y) {
    const float* in = rows + y * row_stride;
    uint8_t* out = dst + static_cast<size_t>(y) * out_w * C;
    for (int x = 0; x < out_w; ++x) {
      const float* w = &fx.weights[static_cast<size_t>(x) * fx.taps];
      const int taps = std::min(fx.taps, in_w - fx.first[x]);
      const float* p = in + static_cast<size_t>(fx.first[x]) * C;
      float sum[kChannels > 0 ? kChannels : 4] = {};
      if constexpr (kChannels > 0) {
        for (int k = 0; k < taps; ++k)
          for (int c = 0; c < kChannels; ++c) sum[c] += w[k] * p[k * kChannels + c];
        for (int c = 0; c < kChannels; ++c) out[x * kChannels + c] = to_byte(sum[c]);
      } else {
        for (int c = 0; c < C; ++c) {
          float s = 0;
          for (int k = 0; k < taps; ++k) s += w[k] * p[k * C + c];
          out[x * C + c] = to_byte(s);
        }
      }
    }
  }
}

}  // namespace

CropBox center_square(int height, int width) {
  const int side = std::min(height, width);
  return CropBox{(width - side) / 2, (height - side) / 2, side, side};
}

void resize_box(const uint8_t* src, int src_h, int src_w, int channels, CropBox box, int out_h, int out_w,
                uint8_t* dst) {
  GT_CHECK(box.x >= 0 && box.y >= 0 && box.w > 0 && box.h > 0 && box.x + box.w <= src_w && box.y + box.h <= src_h,
           "crop box {},{},{},{} outside a {}x{} image", box.x, box.y, box.w, box.h, src_w, src_h);
  GT_CHECK(out_h > 0 && out_w > 0 && channels > 0, "resize to {}x{}x{}", out_h, out_w, channels);
  const size_t src_row = static_cast<size_t>(src_w) * channels;
  const size_t out_row = static_cast<size_t>(out_w) * channels;
  const uint8_t* origin = src + static_cast<size_t>(box.y) * src_row + static_cast<size_t>(box.x) * channels;
  if (box.w == out_w && box.h == out_h) {
    for (int y = 0; y < out_h; ++y) std::memcpy(dst + y * out_row, origin + y * src_row, out_row);
    return;
  }
  const AxisFilter fx = make_axis_filter(box.w, out_w);
  const AxisFilter fy = make_axis_filter(box.h, out_h);

  // Vertical pass first: it reads whole contiguous rows (vectorizes), and when shrinking it leaves only
  // out_h rows for the strided horizontal pass.
  const size_t box_row = static_cast<size_t>(box.w) * channels;
  std::vector<float> rows(static_cast<size_t>(out_h) * box_row);  // the box, resized vertically
  for (int y = 0; y < out_h; ++y) {
    const float* w = &fy.weights[static_cast<size_t>(y) * fy.taps];
    const int taps = std::min(fy.taps, box.h - fy.first[y]);
    float* acc = rows.data() + y * box_row;
    for (int k = 0; k < taps; ++k) {
      const uint8_t* in = origin + static_cast<size_t>(fy.first[y] + k) * src_row;
      const float wk = w[k];
      for (size_t i = 0; i < box_row; ++i) acc[i] += wk * in[i];
    }
  }
  switch (channels) {  // a compile-time channel count lets the compiler unroll the innermost loop
    case 1: resize_rows<1>(rows.data(), box_row, fx, box.w, out_h, out_w, 1, dst); break;
    case 3: resize_rows<3>(rows.data(), box_row, fx, box.w, out_h, out_w, 3, dst); break;
    default: resize_rows<0>(rows.data(), box_row, fx, box.w, out_h, out_w, channels, dst); break;
  }
}

}  // namespace gt
