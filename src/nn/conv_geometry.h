// ConvGeometry: the shape of one Conv2d or ConvTranspose2d call, shared by the CPU kernels and the CUDA backend.
#pragma once

namespace gt {

// Geometry of one convolution call. For Conv2d, "in" is the image and "out" the (smaller or equal)
// result. For ConvTranspose2d, "in" is the small input and "out" the large result; the matching
// convolution maps out -> in, so im2col/col2im run on the "out" image with in_h x in_w positions.
struct ConvGeometry {
  int batch = 0;
  int in_channels = 0, in_h = 0, in_w = 0;
  int out_channels = 0, out_h = 0, out_w = 0;
  int kernel = 1, stride = 1, padding = 0;
  // Equalized learning rate's runtime weight scale: the call computes with weight_scale * weight, and the
  // weight gradient it accumulates is that of the stored (unscaled) weight. 1 for a plain convolution.
  float weight_scale = 1.f;
};

// Output size of a convolution along one axis, or <= 0 when the input is too small for the kernel.
inline int conv_out_size(int in, int kernel, int stride, int padding) {
  return (in + 2 * padding - kernel) / stride + 1;
}
// Output size of a transposed convolution (no output_padding) along one axis.
inline int conv_transpose_out_size(int in, int kernel, int stride, int padding) {
  return (in - 1) * stride - 2 * padding + kernel;
}

}  // namespace gt
