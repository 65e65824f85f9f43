// CPU reference layers (PyTorch semantics and layouts). Kernels in nn/cpu/*.cpp; see docs/architecture.md.
#pragma once
#include <functional>

#include "nn/layer.h"
#include "nn/net.h"  // BatchStatsReducer

namespace gt {

// Geometry of a 2-D convolution; also used for the transposed convolution (with in/out swapped roles).
struct Conv2dSpec {
  int in_channels = 0, out_channels = 0;
  int kernel = 4, stride = 1, padding = 0;
  bool bias = false;
};

// Factories; each returns a layer whose params()/buffers() use PyTorch's names and PyTorch's initial
// values where they matter (BatchNorm weight 1, running_var 1); conv and linear weights start at zero.
LayerPtr make_conv2d(const Conv2dSpec& s);           // weight [out, in, k, k], bias [out]
LayerPtr make_conv_transpose2d(const Conv2dSpec& s); // weight [in, out, k, k], bias [out]
LayerPtr make_batchnorm2d(int channels, float eps = 1e-5f, float momentum = 0.1f);  // weight, bias; running_mean, running_var, num_batches_tracked
LayerPtr make_linear(int in_features, int out_features, bool bias = true);          // weight [out, in], bias [out]
// Per-sample normalization over [C, H, W] with a per-channel affine (weight 1, bias 0): torch.nn.GroupNorm(1,
// channels, eps), the layer normalization of the WGAN-GP paper's critic (it keeps the samples independent).
LayerPtr make_layernorm2d(int channels, float eps = 1e-5f);
LayerPtr make_relu();
LayerPtr make_leaky_relu(float slope = 0.01f);
LayerPtr make_tanh();
LayerPtr make_sigmoid();
LayerPtr make_reshape(Shape per_sample_shape);  // [N, ...] -> [N, per_sample_shape...]

// When layer is a BatchNorm2d, its training forward and backward add up their per-channel sums over the
// ranks with reduce, so mean, variance and the backward's sums are those of the global batch (its own
// parameter gradients stay this rank's share, for the gradient all-reduce). With an identity reduce the
// results are bit-identical to the plain layer's. Empty reduce: this process's batch alone. Returns
// whether layer is a BatchNorm2d.
bool set_batch_stats_reducer(Layer& layer, BatchStatsReducer reduce);

}  // namespace gt
