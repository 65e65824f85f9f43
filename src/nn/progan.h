// Progressive GAN generator and critic (Karras et al. 2018) for one phase of growth, with names that stay fixed as the networks grow.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "nn/sequential.h"

namespace gt {

struct ProganSpec {
  int nz = 512;
  int resolution = 256;  // the final resolution: a power of two from 4 to 1024
  int channels = 3;
  // Feature maps at resolution r: min(fmap_base / r, fmap_max); the paper's 512-capped schedule is 16384 and 512
  // (512 up to 32x32, then 256, 128, 64, 32, 16).
  int fmap_base = 16384;
  int fmap_max = 512;
  int mbstd_group = 4;  // minibatch standard deviation: samples per group
  float leaky_slope = 0.2f;
};

// Resolutions 4, 8, ... spec.resolution; a UserError names the key when resolution is not a power of two in
// [4, 1024] or a width would be below 1.
std::vector<int> progan_resolutions(const ProganSpec& s);
int progan_width(const ProganSpec& s, int resolution);

// One phase: the networks at resolution r (4 <= r <= spec.resolution); with fading, the block of r fades in
// (r >= 8): G mixes the upsampled toRGB of r/2 with the new block's, D the fromRGB of the pooled input with
// the new block's (Fade layers; set_fade_alpha sets the weight).
//   G: z [N, nz, 1, 1] -> PixelNorm, "b4.dense" ConvT 4x4 (a dense layer to [C, 4, 4]), "b4.conv" 3x3, then per
//      resolution "b<r>.conv0" (after a nearest x2 upsample) and "b<r>.conv1", each LeakyReLU(0.2) + PixelNorm;
//      "torgb<r>" 1x1 -> images [N, channels, r, r] (linear output).
//   D: images -> "fromrgb<r>" 1x1 + LeakyReLU, per resolution "b<r>.conv0", "b<r>.conv1" (+ LeakyReLU) and 2x2
//      average pooling, then MinibatchStddev, "b4.conv" 3x3, "b4.dense0", "b4.dense1" -> scores [N, 1, 1, 1].
// Every weight has equalized learning rate (runtime scale gain / sqrt(fan_in), gain sqrt(2), or sqrt(2)/4 for
// b4.dense and 1 for toRGB and b4.dense1, as the paper's code); every layer with weights has a bias.
Sequential make_progan_generator(const ProganSpec& s, int resolution, bool fading);
Sequential make_progan_discriminator(const ProganSpec& s, int resolution, bool fading);

// ProGAN initialization: weights N(0, 1) (the runtime scale does the rest), biases 0. Each parameter's draws are
// keyed by (seed, net_id, its name), so a block gets the same initial weights whenever the network grows to it.
void progan_init(Sequential& net, uint64_t seed, uint32_t net_id);

}  // namespace gt
