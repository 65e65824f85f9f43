// Model FLOPs of one DCGAN training step, counted from the layer shapes of G and D: the numerator of model FLOP utilization.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "nn/sequential.h"

namespace gt::bench {

// Multiply-adds of one convolution layer's forward over the whole batch.
struct LayerMacs {
  std::string name;  // "main.0 ConvTranspose2d 100->1024 4x4 s1 p0, 1x1 -> 4x4"
  int64_t macs = 0;
};

// The convolution (and linear) layers of one forward of net on input, in order; other layers (batch
// norm, activations) are not counted: they are memory-bound and a few percent of the arithmetic.
struct NetMacs {
  std::vector<LayerMacs> layers;
  int64_t forward = 0;  // sum over layers
  int64_t first = 0;    // the first counted layer: its backward needs no data gradient
};
NetMacs count_net_macs(Sequential& net, const Shape& input);

// Multiply-adds of one layer's forward on input (a Fade: both branches; 0 for layers that are not counted).
int64_t layer_forward_macs(Layer& layer, const Shape& input);

// One training step (D on real and on fake, G through the updated D), in FLOPs (2 per multiply-add):
//   G forward                                  Gf
//   D forward + backward on real               Df + (2 Df - D1)   (no data gradient for the images)
//   D forward + backward on fake (detached)    Df + (2 Df - D1)
//   D forward + data-gradient backward, G step Df + Df            (D's filter gradients are not needed)
//   G backward                                 2 Gf - G1          (no data gradient for z)
//   step = 2 * (3 Gf - G1 + 8 Df - 2 D1)
// where a backward is 2 forwards (data and filter gradients) and X1 is the first layer of net X.
struct StepFlops {
  int64_t batch = 0;
  NetMacs g, d;
  int64_t g_forward_flops = 0, d_forward_flops = 0;  // 2 * Gf, 2 * Df
  int64_t step_flops = 0;
};
StepFlops dcgan_step_flops(Sequential& G, Sequential& D, int64_t batch, int nz, int channels, int resolution);

// The formula above in one line, for tables and JSON.
const char* step_flops_formula();

}  // namespace gt::bench
