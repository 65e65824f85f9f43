// Fade: the Progressive GAN's fade-in of a new block, two branches of named layers mixed by alpha, with its backward and double backward.
#include <array>
#include <string>
#include <vector>

#include "nn/cpu/kernels.h"
#include "nn/layers.h"

namespace gt {
namespace {

Tensor scaled(const Tensor& t, float k) {
  Tensor y(t.shape());
  const float* s = t.f32();
  float* d = y.f32();
  for (int64_t i = 0; i < t.numel(); ++i) d[i] = k * s[i];
  return y;
}

// a + b where an undefined tensor is zero.
Tensor sum_of(const Tensor& a, const Tensor& b) {
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  Tensor y = a.clone();
  float* d = y.f32();
  const float* s = b.f32();
  for (int64_t i = 0; i < y.numel(); ++i) d[i] += s[i];
  return y;
}

class FadeLayer final : public Fade {
 public:
  FadeLayer(std::vector<NamedLayer> old_branch, std::vector<NamedLayer> new_branch) {
    branches_[0].layers = std::move(old_branch);
    branches_[1].layers = std::move(new_branch);
    for (const Branch& b : branches_) {
      if (b.layers.empty()) user_error("a Fade needs a layer in each branch");
      for (const NamedLayer& l : b.layers) GT_CHECK(l.layer, "Fade: an empty layer in a branch");
    }
  }

  std::string kind() const override { return "Fade"; }
  void set_alpha(float alpha) override {
    if (!(alpha >= 0.f && alpha <= 1.f)) user_error("a fade-in weight must lie in [0, 1], got {}", alpha);
    alpha_ = alpha;
  }
  float alpha() const override { return alpha_; }
  size_t branch_size(int branch) const override { return branches_.at(branch).layers.size(); }
  Layer& branch_layer(int branch, size_t i) override { return *branches_.at(branch).layers.at(i).layer; }
  const std::string& branch_name(int branch, size_t i) const override { return branches_.at(branch).layers.at(i).name; }

  Shape output_shape(const Shape& in) const override {
    Shape out[2];
    for (int b = 0; b < 2; ++b) {
      out[b] = in;
      for (const NamedLayer& l : branches_[b].layers) out[b] = l.layer->output_shape(out[b]);
    }
    if (out[0] != out[1])
      user_error("Fade: the old branch makes {} and the new block {} from an input of shape {}", shape_str(out[0]),
                 shape_str(out[1]), shape_str(in));
    return out[0];
  }

  Tensor forward(const Tensor& x, Mode mode) override {
    Tensor y[2];
    for (int b = 0; b < 2; ++b) {
      Tensor h = x;
      for (NamedLayer& l : branches_[b].layers) h = l.layer->forward(h, mode);
      y[b] = h;
    }
    GT_CHECK(y[0].shape() == y[1].shape(), "Fade: branches made {} and {}", y[0].str(), y[1].str());
    Tensor out(y[0].shape());
    cpu::lerp_forward(out.f32(), y[0].f32(), y[1].f32(), alpha_, out.numel());
    used_alpha_ = alpha_;
    return out;
  }

  // Each branch's backward from its share of dy; the inner output gradients are kept for the double backward.
  Tensor backward(const Tensor& dy, bool param_grads) override {
    Tensor dx;
    for (int b = 0; b < 2; ++b) {
      Branch& br = branches_[b];
      br.deltas.assign(br.layers.size(), Tensor());
      Tensor g = scaled(dy, weight(b));
      for (size_t i = br.layers.size(); i-- > 0;) {
        br.deltas[i] = g;
        g = br.layers[i].layer->backward(g, param_grads);
      }
      dx = sum_of(dx, g);
    }
    return dx;
  }

  Tensor tangent(const Tensor& t) override {
    Tensor y[2];
    for (int b = 0; b < 2; ++b) {
      Branch& br = branches_[b];
      br.tangents.assign(br.layers.size(), Tensor());
      Tensor h = t;
      for (size_t i = 0; i < br.layers.size(); ++i) {
        br.tangents[i] = h;
        h = br.layers[i].layer->tangent(h);
      }
      y[b] = h;
    }
    Tensor out(y[0].shape());
    cpu::lerp_forward(out.f32(), y[0].f32(), y[1].f32(), used_alpha_, out.numel());
    return out;
  }

  // Sequential's rule inside each branch: the branch's share of dy_bar comes in from above, each layer adds its
  // weight gradient of delta . J t and passes its adjoint down; the two branches' input adjoints add up.
  Tensor backward_second(const Tensor& dy_bar, const Tensor& t, const Tensor& delta) override {
    (void)t, (void)delta;  // the branches kept their own tangents and output gradients
    Tensor dx;
    for (int b = 0; b < 2; ++b) {
      Branch& br = branches_[b];
      GT_CHECK(br.deltas.size() == br.layers.size() && br.tangents.size() == br.layers.size(),
               "Fade double backward without a backward and a tangent");
      Tensor adjoint = dy_bar.defined() ? scaled(dy_bar, weight(b)) : Tensor();
      for (size_t i = br.layers.size(); i-- > 0;)
        adjoint = br.layers[i].layer->backward_second(adjoint, br.tangents[i], br.deltas[i]);
      dx = sum_of(dx, adjoint);
      br.deltas.clear();
      br.tangents.clear();
    }
    return dx;
  }

  std::vector<Param*> params() override {
    std::vector<Param*> out;
    for (const NamedParam& p : scoped_params()) out.push_back(p.param);
    return out;
  }
  std::vector<Buffer*> buffers() override {
    std::vector<Buffer*> out;
    for (const NamedBuffer& b : scoped_buffers()) out.push_back(b.buffer);
    return out;
  }
  std::vector<NamedParam> scoped_params() override {
    std::vector<NamedParam> out;
    for (Branch& br : branches_)
      for (NamedLayer& l : br.layers)
        for (const NamedParam& p : l.layer->scoped_params())
          out.push_back({l.name.empty() ? p.name : l.name + "." + p.name, p.param});
    return out;
  }
  std::vector<NamedBuffer> scoped_buffers() override {
    std::vector<NamedBuffer> out;
    for (Branch& br : branches_)
      for (NamedLayer& l : br.layers)
        for (const NamedBuffer& b : l.layer->scoped_buffers())
          out.push_back({l.name.empty() ? b.name : l.name + "." + b.name, b.buffer});
    return out;
  }

 private:
  struct Branch {
    std::vector<NamedLayer> layers;
    std::vector<Tensor> deltas, tangents;  // of the last backward and tangent, per layer
  };
  float weight(int branch) const { return branch == 0 ? 1.f - used_alpha_ : used_alpha_; }

  std::array<Branch, 2> branches_;
  float alpha_ = 0.f;       // for the next forward
  float used_alpha_ = 0.f;  // of the last forward: its backward and tangents use it
};

}  // namespace

std::unique_ptr<Fade> make_fade(std::vector<NamedLayer> old_branch, std::vector<NamedLayer> new_branch) {
  return std::make_unique<FadeLayer>(std::move(old_branch), std::move(new_branch));
}

}  // namespace gt
