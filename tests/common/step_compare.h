// Comparing a trained tensor of the CUDA engine with the CPU engine's: a relative bound plus a floor in units of the optimizer's largest step, so that one sign flip of a near-zero gradient passes and a real error fails.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "train/optim.h"

namespace gt::step_compare {

// ||a - b|| / ||b|| over f32 tensors of the same size (||a - b|| when b is zero).
inline double rel_diff(const Tensor& a, const Tensor& b) {
  double d = 0, n = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double x = a.f32()[i], y = b.f32()[i];
    d += (x - y) * (x - y);
    n += y * y;
  }
  return n > 0 ? std::sqrt(d / n) : std::sqrt(d);
}

// Adam and RMSProp move an element by about lr (RMSProp by lr / sqrt(1 - alpha) at first) whatever its
// gradient's size, so a gradient near zero whose sign differs between the engines (summation order, TF32,
// bf16) makes a difference of twice the whole move, while a bias vector that started at zero is itself only
// a few moves in norm: a relative bound alone fails such a tensor falsely. The floor allows that difference
// for a share of the elements; a tensor that moved the wrong way, or not at all, is still far outside it.
struct Tolerance {
  double rel = 0;            // of ||cpu||
  double move = 0;           // the most one element moves over the steps compared (optimizer_move_bound)
  double flip_fraction = 0;  // the share of elements whose gradient may change sign between the engines
};

struct Comparison {
  bool ok = false;
  double diff_norm = 0, ref_norm = 0, allowed = 0;
  int64_t flips_allowed = 0, non_finite = 0;
  std::string detail() const {
    std::ostringstream s;
    s << "||gpu - cpu|| " << diff_norm << " vs allowed " << allowed << " (||cpu|| " << ref_norm << ", floor for "
      << flips_allowed << " sign flips)";
    if (non_finite) s << "; " << non_finite << " values not finite where the CPU's are";
    return s.str();
  }
};

// ||got - want|| <= rel * ||want|| + 2 * move * sqrt(k), k = max(1, ceil(flip_fraction * n)) when
// flip_fraction > 0 (else 0): k elements each off by a full two-way move fit, one more relative error does
// not. A non-finite value where want has a finite one fails.
inline Comparison compare_trained(const float* got, const float* want, int64_t n, const Tolerance& t) {
  Comparison c;
  double d2 = 0, r2 = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double g = got[i], w = want[i];
    if (!std::isfinite(g) && std::isfinite(w)) {
      ++c.non_finite;
      continue;
    }
    d2 += (g - w) * (g - w);
    r2 += w * w;
  }
  c.diff_norm = std::sqrt(d2);
  c.ref_norm = std::sqrt(r2);
  c.flips_allowed =
      t.flip_fraction > 0 ? std::max<int64_t>(1, static_cast<int64_t>(std::ceil(t.flip_fraction * static_cast<double>(n)))) : 0;
  c.allowed = t.rel * c.ref_norm + 2 * t.move * std::sqrt(static_cast<double>(c.flips_allowed));
  c.ok = c.non_finite == 0 && c.diff_norm <= c.allowed;
  return c;
}

// How far the host optimizer moves one element in `steps` steps of a constant small gradient (1e-4): about
// lr * steps for Adam, more for RMSProp, next to nothing for SGD, whose step scales with the gradient (so a
// near-zero gradient's flip costs nearly nothing there). Measured with the optimizer itself, not a formula.
inline double optimizer_move_bound(const OptimConfig& config, int64_t steps) {
  Param p{"w", Tensor({1}), Tensor({1})};
  std::unique_ptr<Optimizer> opt = make_optimizer(config, {NamedParam{"w", &p}});
  for (int64_t s = 0; s < steps; ++s) {
    p.grad.f32()[0] = 1e-4f;
    opt->step();
  }
  return std::abs(static_cast<double>(p.value.f32()[0]));
}

}  // namespace gt::step_compare
