// CPU reference layers (PyTorch semantics and layouts). Kernels in nn/cpu/*.cpp; see docs/architecture.md.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nn/layer.h"
#include "nn/net.h"  // BatchStatsReducer

namespace gt {

// Geometry of a 2-D convolution; also used for the transposed convolution (with in/out swapped roles).
struct Conv2dSpec {
  int in_channels = 0, out_channels = 0;
  int kernel = 4, stride = 1, padding = 0;
  bool bias = false;
  // Equalized learning rate (Karras et al. 2018, 4.1): the layer computes with weight_scale * weight, the
  // parameter stays unscaled (its gradient is that of the stored weight); the bias is not scaled.
  float weight_scale = 1.f;
};

// Factories; each returns a layer whose params()/buffers() use PyTorch's names and PyTorch's initial
// values where they matter (BatchNorm weight 1, running_var 1); conv and linear weights start at zero.
LayerPtr make_conv2d(const Conv2dSpec& s);           // weight [out, in, k, k], bias [out]
LayerPtr make_conv_transpose2d(const Conv2dSpec& s); // weight [in, out, k, k], bias [out]
LayerPtr make_batchnorm2d(int channels, float eps = 1e-5f, float momentum = 0.1f);  // weight, bias; running_mean, running_var, num_batches_tracked
LayerPtr make_linear(int in_features, int out_features, bool bias = true,
                     float weight_scale = 1.f);  // weight [out, in], bias [out]; weight_scale as Conv2dSpec's
// Per-sample normalization over [C, H, W] with a per-channel affine (weight 1, bias 0): torch.nn.GroupNorm(1,
// channels, eps), the layer normalization of the WGAN-GP paper's critic (it keeps the samples independent).
LayerPtr make_layernorm2d(int channels, float eps = 1e-5f);
LayerPtr make_relu();
LayerPtr make_leaky_relu(float slope = 0.01f);
LayerPtr make_tanh();
LayerPtr make_sigmoid();
LayerPtr make_reshape(Shape per_sample_shape);  // [N, ...] -> [N, per_sample_shape...]

// ---- Progressive GAN (Karras et al. 2018) ----
// Pixel-wise feature normalization: each position's C features divided by their root mean square (+eps).
LayerPtr make_pixel_norm(float eps = 1e-8f);
LayerPtr make_upsample2x();  // nearest neighbour, [N, C, H, W] -> [N, C, 2H, 2W]
LayerPtr make_avg_pool2x();  // 2x2 average, [N, C, H, W] -> [N, C, H/2, W/2] (H, W even)
// Minibatch standard deviation: [N, C, H, W] -> [N, C+1, H, W], the added channel holding each group's mean
// standard deviation; groups of `group` consecutive samples (N a multiple of group).
LayerPtr make_minibatch_stddev(int group, float eps = 1e-8f);

struct NamedLayer {
  std::string name;  // the prefix of its parameters' names ("torgb8"); may be empty for a layer without any
  LayerPtr layer;
};

// Fade-in of a new block: two branches of named layers on the same input, out = (1 - alpha) old(x) + alpha new(x).
// Its parameters are named by the inner layers' names, so they keep their names when the fade is gone.
class Fade : public Layer {
 public:
  virtual void set_alpha(float alpha) = 0;
  virtual float alpha() const = 0;
  // Branch 0 is the old path, 1 the new block.
  virtual size_t branch_size(int branch) const = 0;
  virtual Layer& branch_layer(int branch, size_t i) = 0;
  virtual const std::string& branch_name(int branch, size_t i) const = 0;
};
std::unique_ptr<Fade> make_fade(std::vector<NamedLayer> old_branch, std::vector<NamedLayer> new_branch);

// f(inner, its input shape) for every layer of both of fade's branches, old then new, each branch from `in`: the
// walk of tools that measure layers (FLOPs, activations, batch-norm channels).
inline void for_each_branch_layer(Fade& fade, const Shape& in, const std::function<void(Layer&, const Shape&)>& f) {
  for (int b = 0; b < 2; ++b) {
    Shape shape = in;
    for (size_t k = 0; k < fade.branch_size(b); ++k) {
      Layer& inner = fade.branch_layer(b, k);
      f(inner, shape);
      shape = inner.output_shape(shape);
    }
  }
}

// When layer is a BatchNorm2d, its training forward and backward add up their per-channel sums over the
// ranks with reduce, so mean, variance and the backward's sums are those of the global batch (its own
// parameter gradients stay this rank's share, for the gradient all-reduce). With an identity reduce the
// results are bit-identical to the plain layer's. Empty reduce: this process's batch alone. Returns
// whether layer is a BatchNorm2d.
bool set_batch_stats_reducer(Layer& layer, BatchStatsReducer reduce);

}  // namespace gt
