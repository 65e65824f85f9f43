// DCGAN model construction and initialization.
#include "nn/dcgan.h"

#include "core/rng.h"
#include "nn/layers.h"

namespace gt {

namespace {

int upsampling_stages(const DcganSpec& s) {
  switch (s.resolution) {
    case 32: return 3;
    case 64: return 4;
    case 128: return 5;
  }
  user_error("model.resolution must be 32, 64 or 128 for dcgan, got {}", s.resolution);
}

}  // namespace

Sequential make_dcgan_generator(const DcganSpec& s) {
  const int stages = upsampling_stages(s);
  Sequential g("main");
  int width = s.g_width << (stages - 1);
  const bool bias = s.g_norm == NormKind::none;
  auto norm = [&g, &s](int channels) {
    if (s.g_norm == NormKind::batch) g.add(make_batchnorm2d(channels));
    if (s.g_norm == NormKind::layer) g.add(make_layernorm2d(channels));
  };
  g.add(make_conv_transpose2d({s.nz, width, 4, 1, 0, bias}));
  norm(width);
  g.add(make_relu());
  for (int i = stages - 1; i >= 1; --i) {
    g.add(make_conv_transpose2d({width, width / 2, 4, 2, 1, bias}));
    width /= 2;
    norm(width);
    g.add(make_relu());
  }
  g.add(make_conv_transpose2d({width, s.channels, 4, 2, 1, false}));
  g.add(make_tanh());
  return g;
}

Sequential make_dcgan_discriminator(const DcganSpec& s) {
  const int stages = upsampling_stages(s);
  Sequential d("main");
  int width = s.d_width;
  d.add(make_conv2d({s.channels, width, 4, 2, 1, false}));
  d.add(make_leaky_relu(s.leaky_slope));
  for (int i = 1; i < stages; ++i) {
    d.add(make_conv2d({width, width * 2, 4, 2, 1, s.d_norm == NormKind::none}));
    width *= 2;
    if (s.d_norm == NormKind::batch) d.add(make_batchnorm2d(width));
    if (s.d_norm == NormKind::layer) d.add(make_layernorm2d(width));
    d.add(make_leaky_relu(s.leaky_slope));
  }
  d.add(make_conv2d({width, 1, 4, 1, 0, false}));
  return d;
}

void dcgan_init(Sequential& net, float std, uint64_t seed, uint32_t net_id) {
  uint64_t index = 0;
  for (size_t i = 0; i < net.size(); ++i) {
    Layer& layer = net.layer(i);
    const bool is_bn = layer.kind() == "BatchNorm2d";
    for (Param* p : layer.params()) {
      // Each parameter draws from its own window of the init stream: (net_id, index) << 40.
      const uint64_t offset = ((static_cast<uint64_t>(net_id) << 20) + index++) << 40;
      if (layer.kind() == "LayerNorm2d") {
        p->value.fill(p->name == "weight" ? 1.f : 0.f);  // torch.nn.GroupNorm's init, as the WGAN-GP critic's
      } else if (p->name == "weight") {
        fill_normal(p->value.f32(), p->value.numel(), is_bn ? 1.f : 0.f, std, seed, RngStream::init, offset);
      } else {
        p->value.zero();
      }
    }
  }
}

}  // namespace gt
