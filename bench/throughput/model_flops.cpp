// Counts convolution multiply-adds from each layer's weight and input/output shapes (no hooks, no forward pass).
#include "model_flops.h"

#include <fmt/format.h>

#include "nn/layers.h"

namespace gt::bench {
namespace {

// Conv2d: every output position is a dot product over in * k * k inputs (weight [out, in, k, k]).
// ConvTranspose2d: every input position scatters an out * k * k patch (weight [in, out, k, k]); the same
// count as the Conv2d whose backward it is. Linear: in * out per row (weight [out, in]).
int64_t layer_macs(Layer& layer, const Shape& in, const Shape& out) {
  const std::string kind = layer.kind();
  if (kind != "Conv2d" && kind != "ConvTranspose2d" && kind != "Linear") return 0;
  const std::vector<Param*> params = layer.params();
  GT_CHECK(!params.empty() && params[0]->name == "weight", "{} layer without a weight", kind);
  const Shape& w = params[0]->value.shape();
  const int64_t weight_elems = shape_numel(w);
  if (kind == "Linear") return in[0] * weight_elems;
  GT_CHECK(w.size() == 4 && in.size() == 4 && out.size() == 4, "{}: weight {} input {} output {}", kind,
           shape_str(w), shape_str(in), shape_str(out));
  if (kind == "Conv2d") return out[0] * out[2] * out[3] * weight_elems;
  return in[0] * in[2] * in[3] * weight_elems;
}

std::string layer_label(size_t index, Layer& layer, const Shape& in, const Shape& out) {
  const Shape& w = layer.params()[0]->value.shape();
  if (layer.kind() == "Linear") return fmt::format("main.{} Linear {}->{}", index, w[1], w[0]);
  const bool transposed = layer.kind() == "ConvTranspose2d";
  return fmt::format("main.{} {} {}->{} {}x{}, {}x{} -> {}x{}", index, layer.kind(), transposed ? w[0] : w[1],
                     transposed ? w[1] : w[0], w[2], w[3], in[2], in[3], out[2], out[3]);
}

}  // namespace

namespace {

// One layer's count into r; a Fade (Progressive GAN) counts both of its branches, each from the same input.
void count_layer(Layer& layer, size_t index, const Shape& in, NetMacs& r) {
  if (auto* fade = dynamic_cast<Fade*>(&layer)) {
    for_each_branch_layer(*fade, in, [&](Layer& inner, const Shape& s) { count_layer(inner, index, s, r); });
    return;
  }
  const Shape out = layer.output_shape(in);
  const int64_t macs = layer_macs(layer, in, out);
  if (macs > 0) {
    if (r.layers.empty()) r.first = macs;
    r.layers.push_back({layer_label(index, layer, in, out), macs});
    r.forward += macs;
  }
}

}  // namespace

int64_t layer_forward_macs(Layer& layer, const Shape& input) {
  NetMacs r;
  count_layer(layer, 0, input, r);
  return r.forward;
}

NetMacs count_net_macs(Sequential& net, const Shape& input) {
  NetMacs r;
  Shape shape = input;
  for (size_t i = 0; i < net.size(); ++i) {
    Layer& layer = net.layer(i);
    count_layer(layer, i, shape, r);
    shape = layer.output_shape(shape);
  }
  return r;
}

StepFlops dcgan_step_flops(Sequential& G, Sequential& D, int64_t batch, int nz, int channels, int resolution) {
  StepFlops f;
  f.batch = batch;
  f.g = count_net_macs(G, {batch, nz, 1, 1});
  f.d = count_net_macs(D, {batch, channels, resolution, resolution});
  f.g_forward_flops = 2 * f.g.forward;
  f.d_forward_flops = 2 * f.d.forward;
  f.step_flops = 2 * (3 * f.g.forward - f.g.first + 8 * f.d.forward - 2 * f.d.first);
  return f;
}

const char* step_flops_formula() {
  return "step FLOPs = 2 * (3 Gf - G1 + 8 Df - 2 D1): Gf, Df = conv multiply-adds of one G, D forward over the "
         "batch, G1, D1 = those of each net's first conv; G fwd + D fwd/bwd on real + D fwd/bwd on fake + D fwd "
         "and data-grad bwd for the G step + G bwd; a backward = 2 forwards (data + filter grads), no data grad "
         "into z or the images, no D filter grads in the G step; batch norm, activations and Adam not counted";
}

}  // namespace gt::bench
