// Conv2d and ConvTranspose2d on cuDNN: algorithms found once per shape and cached, one shared workspace; the same calls and accumulation rules as the CPU kernels.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "cuda/context.h"
#include "cuda/formats.h"
#include "nn/conv_geometry.h"  // one geometry struct for both backends

namespace gt::cuda {

// Data is stored in the engine's ActFormat (f32 or bf16, NCHW or NHWC; f32 NCHW by default). Weights
// are the packed copies pack_conv_weight makes for that format (for f32 NCHW: PyTorch's own layout,
// Conv2d [OC, C, K, K], ConvTranspose2d [C, OC, K, K]); biases are f32 [OC] or null. The geometry means
// what it means for the CPU kernels (nn/conv_geometry.h), weight_scale included: every direction computes
// with weight_scale * weight (cuDNN's alpha) and the weight gradient is that of the stored weight; the bias is
// not scaled.
// The first call with a new shape benchmarks cuDNN's algorithms (cudnnFind*, which allocates and
// synchronizes); later calls with that shape only launch. Run one step before timing or capturing.
class ConvEngine {
 public:
  explicit ConvEngine(GpuContext& ctx, ActFormat fmt = {});
  ~ConvEngine();
  ConvEngine(const ConvEngine&) = delete;
  ConvEngine& operator=(const ConvEngine&) = delete;

  const ActFormat& format() const;

  // out [N, OC, OH, OW] from in [N, C, H, W].
  void conv2d_forward(void* out, const void* in, const void* weight, const float* bias, const ConvGeometry& g);
  // dweight (packed format) accumulates (+=) when accumulate_dweight, else is overwritten; dbias
  // accumulates; dinp is written. Each is skipped when null (a pass that needs only the input gradient).
  void conv2d_backward(void* dinp, void* dweight, float* dbias, const void* dout, const void* in, const void* weight,
                       const ConvGeometry& g, bool accumulate_dweight = true);
  // out [N, OC, OH, OW] (the large side) from in [N, C, H, W]: the convolution's backward-data.
  void conv_transpose2d_forward(void* out, const void* in, const void* weight, const float* bias,
                                const ConvGeometry& g);
  // dweight as conv2d_backward; dinp (the small side) is written: a convolution forward of dout.
  void conv_transpose2d_backward(void* dinp, void* dweight, float* dbias, const void* dout, const void* in,
                                 const void* weight, const ConvGeometry& g, bool accumulate_dweight = true);

  size_t plans() const;            // shapes seen so far
  size_t workspace_bytes() const;  // the shared workspace, as large as the largest chosen algorithm needs
  std::string describe() const;    // one line per shape and direction: the algorithm, its time and workspace

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gt::cuda
