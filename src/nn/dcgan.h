// DCGAN generator and discriminator (Radford et al.), laid out exactly as the classic PyTorch example so names match ("main.0.weight").
#pragma once
#include <cstdint>

#include "nn/sequential.h"

namespace gt {

// Normalization of a network's hidden layers: BatchNorm2d (DCGAN), LayerNorm2d (per sample; a critic with a
// gradient penalty needs it or none), or none (the hidden convolutions then carry a bias).
enum class NormKind : uint8_t { batch, layer, none };

struct DcganSpec {
  int nz = 100;
  int g_width = 128;    // ngf
  int d_width = 128;    // ndf
  int resolution = 64;  // 32, 64 or 128: log2(resolution) - 2 upsampling stages after the 4x4 seed
  int channels = 3;
  float leaky_slope = 0.2f;
  NormKind d_norm = NormKind::batch;
  NormKind g_norm = NormKind::batch;
};

// G: z [N, nz, 1, 1] -> ConvT(nz, g*2^(s-1), 4, 1, 0) BN ReLU, ConvT(.., 4, 2, 1) BN ReLU ..., ConvT(g, c, 4, 2, 1) Tanh.
// With g_norm layer, LayerNorm2d replaces BN; with none, the hidden ConvT get a bias and no norm.
Sequential make_dcgan_generator(const DcganSpec& s);
// D: x [N, c, R, R] -> Conv(c, d, 4, 2, 1) LReLU, Conv(.., 4, 2, 1) BN LReLU ..., Conv(d*2^(s-1), 1, 4, 1, 0): logits [N, 1, 1, 1].
// With d_norm layer, LayerNorm2d replaces BN; with none, the hidden Conv(.., 4, 2, 1) get a bias and no norm.
Sequential make_dcgan_discriminator(const DcganSpec& s);

// DCGAN initialization: conv weights N(0, std), BN weight N(1, std), biases 0, LayerNorm2d weight 1. Draws are keyed by
// (seed, net_id, parameter index), so the same seed gives the same weights everywhere.
void dcgan_init(Sequential& net, float std, uint64_t seed, uint32_t net_id);

}  // namespace gt
