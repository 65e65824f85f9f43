// Conv2d and ConvTranspose2d on cuDNN: algorithms found once per shape and cached, one shared workspace; the same calls and accumulation rules as the CPU kernels.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "context.h"
#include "nn/cpu/kernels.h"  // cpu::ConvGeometry: one geometry struct for both backends

namespace gt::cuda {

// Layouts are PyTorch's, NCHW: Conv2d weight [OC, C, K, K], ConvTranspose2d weight [C, OC, K, K],
// bias [OC] or null. The geometry means what it means for the CPU kernels (nn/cpu/kernels.h).
// The first call with a new shape benchmarks cuDNN's algorithms (cudnnFind*, which allocates and
// synchronizes); later calls with that shape only launch. Run one step before timing or capturing.
class ConvEngine {
 public:
  explicit ConvEngine(GpuContext& ctx);
  ~ConvEngine();
  ConvEngine(const ConvEngine&) = delete;
  ConvEngine& operator=(const ConvEngine&) = delete;

  // out [N, OC, OH, OW] from in [N, C, H, W].
  void conv2d_forward(float* out, const float* in, const float* weight, const float* bias,
                      const cpu::ConvGeometry& g);
  // dweight, dbias accumulate (+=; dbias skipped when null); dinp is written (skipped when null).
  void conv2d_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* in,
                       const float* weight, const cpu::ConvGeometry& g);
  // out [N, OC, OH, OW] (the large side) from in [N, C, H, W]: the convolution's backward-data.
  void conv_transpose2d_forward(float* out, const float* in, const float* weight, const float* bias,
                                const cpu::ConvGeometry& g);
  // dweight, dbias accumulate; dinp (the small side) is written: a convolution forward of dout.
  void conv_transpose2d_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* in,
                                 const float* weight, const cpu::ConvGeometry& g);

  size_t plans() const;            // shapes seen so far
  size_t workspace_bytes() const;  // the shared workspace, as large as the largest chosen algorithm needs
  std::string describe() const;    // one line per shape and direction: the algorithm, its time and workspace

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gt::cuda
