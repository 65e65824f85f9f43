// Progressive GAN model construction (one phase of growth) and initialization.
#include "nn/progan.h"

#include <cmath>

#include "core/hash.h"
#include "core/rng.h"
#include "nn/layers.h"

namespace gt {

namespace {

float he_scale(float gain, int fan_in) { return gain / std::sqrt(static_cast<float>(fan_in)); }
const float kSqrt2 = std::sqrt(2.f);

LayerPtr conv(int in, int out, int kernel, float gain) {
  Conv2dSpec c{in, out, kernel, 1, kernel / 2, true};
  c.weight_scale = he_scale(gain, in * kernel * kernel);
  return make_conv2d(c);
}

std::string block(int r) { return "b" + std::to_string(r); }

void check_phase(const ProganSpec& s, int r, bool fading) {
  const std::vector<int> all = progan_resolutions(s);
  bool found = false;
  for (int x : all) found = found || x == r;
  if (!found) user_error("a Progressive GAN phase at {}x{} is not one of the resolutions 4 .. {}", r, r, s.resolution);
  if (fading && r == 4) user_error("the 4x4 phase of a Progressive GAN has no block to fade in");
}

// G's layers of resolution r: the 4x4 seed block, or upsample + two 3x3 convolutions.
void generator_block(const ProganSpec& s, int r, std::vector<NamedLayer>& out) {
  auto act = [&] {
    out.push_back({"", make_leaky_relu(s.leaky_slope)});
    out.push_back({"", make_pixel_norm()});
  };
  const int c = progan_width(s, r);
  if (r == 4) {
    Conv2dSpec dense{s.nz, c, 4, 1, 0, true};
    dense.weight_scale = he_scale(kSqrt2 / 4, s.nz);
    out.push_back({"b4.dense", make_conv_transpose2d(dense)});
    act();
    out.push_back({"b4.conv", conv(c, c, 3, kSqrt2)});
    act();
    return;
  }
  out.push_back({"", make_upsample2x()});
  out.push_back({block(r) + ".conv0", conv(progan_width(s, r / 2), c, 3, kSqrt2)});
  act();
  out.push_back({block(r) + ".conv1", conv(c, c, 3, kSqrt2)});
  act();
}

NamedLayer to_rgb(const ProganSpec& s, int r) {
  return {"torgb" + std::to_string(r), conv(progan_width(s, r), s.channels, 1, 1.f)};
}

void from_rgb(const ProganSpec& s, int r, std::vector<NamedLayer>& out) {
  out.push_back({"fromrgb" + std::to_string(r), conv(s.channels, progan_width(s, r), 1, kSqrt2)});
  out.push_back({"", make_leaky_relu(s.leaky_slope)});
}

// D's layers of resolution r: two 3x3 convolutions and pooling, or the 4x4 final block.
void critic_block(const ProganSpec& s, int r, std::vector<NamedLayer>& out) {
  const int c = progan_width(s, r);
  if (r == 4) {
    out.push_back({"", make_minibatch_stddev(s.mbstd_group)});
    out.push_back({"b4.conv", conv(c + 1, c, 3, kSqrt2)});
    out.push_back({"", make_leaky_relu(s.leaky_slope)});
    out.push_back({"", make_reshape({16 * c})});
    out.push_back({"b4.dense0", make_linear(16 * c, c, true, he_scale(kSqrt2, 16 * c))});
    out.push_back({"", make_leaky_relu(s.leaky_slope)});
    out.push_back({"b4.dense1", make_linear(c, 1, true, he_scale(1.f, c))});
    out.push_back({"", make_reshape({1, 1, 1})});
    return;
  }
  out.push_back({block(r) + ".conv0", conv(c, c, 3, kSqrt2)});
  out.push_back({"", make_leaky_relu(s.leaky_slope)});
  out.push_back({block(r) + ".conv1", conv(c, progan_width(s, r / 2), 3, kSqrt2)});
  out.push_back({"", make_leaky_relu(s.leaky_slope)});
  out.push_back({"", make_avg_pool2x()});
}

void add_all(Sequential& net, std::vector<NamedLayer>& layers) {
  net.add_all(std::move(layers));
  layers.clear();
}

}  // namespace

std::vector<int> progan_resolutions(const ProganSpec& s) {
  const int r = s.resolution;
  if (r < 4 || r > 1024 || (r & (r - 1)) != 0)
    user_error("model.resolution must be a power of two from 4 to 1024 for progan, got {}", r);
  if (s.fmap_base < 1 || s.fmap_max < 1) user_error("model.fmap_base and model.fmap_max must be positive");
  if (s.fmap_base / r < 1)
    user_error("model.fmap_base {} gives no feature maps at {}x{}: it must be at least the resolution", s.fmap_base, r,
               r);
  if (s.mbstd_group < 1) user_error("model.mbstd_group must be at least 1, got {}", s.mbstd_group);
  std::vector<int> out;
  for (int x = 4; x <= r; x *= 2) out.push_back(x);
  return out;
}

int progan_width(const ProganSpec& s, int resolution) {
  return std::max(1, std::min(s.fmap_base / resolution, s.fmap_max));
}

Sequential make_progan_generator(const ProganSpec& s, int r, bool fading) {
  check_phase(s, r, fading);
  Sequential g("");
  std::vector<NamedLayer> layers;
  layers.push_back({"", make_pixel_norm()});  // the latent, normalized as in the paper
  const int trunk_top = fading ? r / 2 : r;
  for (int x = 4; x <= trunk_top; x *= 2) generator_block(s, x, layers);
  if (!fading) {
    layers.push_back(to_rgb(s, r));
    add_all(g, layers);
    return g;
  }
  std::vector<NamedLayer> old_branch, new_branch;
  old_branch.push_back(to_rgb(s, r / 2));
  old_branch.push_back({"", make_upsample2x()});
  generator_block(s, r, new_branch);
  new_branch.push_back(to_rgb(s, r));
  layers.push_back({"", make_fade(std::move(old_branch), std::move(new_branch))});
  add_all(g, layers);
  return g;
}

Sequential make_progan_discriminator(const ProganSpec& s, int r, bool fading) {
  check_phase(s, r, fading);
  Sequential d("");
  std::vector<NamedLayer> layers;
  int x = r;
  if (fading) {
    std::vector<NamedLayer> old_branch, new_branch;
    old_branch.push_back({"", make_avg_pool2x()});
    from_rgb(s, r / 2, old_branch);
    from_rgb(s, r, new_branch);
    critic_block(s, r, new_branch);
    layers.push_back({"", make_fade(std::move(old_branch), std::move(new_branch))});
    x = r / 2;
  } else {
    from_rgb(s, r, layers);
  }
  for (; x >= 4; x /= 2) critic_block(s, x, layers);
  add_all(d, layers);
  return d;
}

void progan_init(Sequential& net, uint64_t seed, uint32_t net_id) {
  for (const NamedParam& p : net.named_params()) {
    const bool weight = p.name.size() >= 7 && p.name.compare(p.name.size() - 7, 7, ".weight") == 0;
    if (!weight) {
      p.param->value.zero();
      continue;
    }
    // The top 24 bits of a hash of (net_id, name) pick the parameter's window of 2^40 draws in the init stream.
    const uint64_t key = fnv1a64(p.name, fnv1a64(std::to_string(net_id)));
    fill_normal(p.param->value.f32(), p.param->value.numel(), 0.f, 1.f, seed, RngStream::init, (key >> 40) << 40);
  }
}

}  // namespace gt
