// Progressive growing's schedule: phases from progan.*, fade-in weights and per-phase batches.
#include "train/progressive.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "nn/cpu/kernels.h"

namespace gt {

std::string ProganPhase::name() const {
  return fmt::format("{}x{} {}", resolution, resolution, fading ? "transition" : "stable");
}

int64_t ProganSchedule::total_steps() const {
  return phases.empty() ? 0 : phases.back().first_step + phases.back().steps;
}

const ProganPhase& ProganSchedule::phase_at(int64_t step) const {
  GT_CHECK(!phases.empty(), "an empty progressive schedule");
  for (const ProganPhase& p : phases)
    if (step < p.first_step + p.steps) return p;
  return phases.back();
}

double ProganSchedule::alpha(int64_t step) const {
  const ProganPhase& p = phase_at(step);
  if (!p.fading) return 1.0;
  return std::clamp(static_cast<double>(step - p.first_step) / static_cast<double>(p.steps), 0.0, 1.0);
}

double ProganSchedule::alpha_after(int64_t steps_done) const {
  const ProganPhase& p = phase_after(steps_done);
  if (!p.fading) return 1.0;
  const int64_t into = std::clamp<int64_t>(steps_done - p.first_step, 0, p.steps);
  return static_cast<double>(into) / static_cast<double>(p.steps);
}

int64_t ProganSchedule::images_before(int64_t step) const {
  int64_t images = 0;
  for (const ProganPhase& p : phases) {
    const int64_t done = std::clamp<int64_t>(step - p.first_step, 0, p.steps);
    images += done * p.batch * n_critic;
  }
  return images;
}

ProganSpec progan_spec(const ModelConfig& m) {
  if (m.arch != "progan") user_error("model.arch is '{}', not progan", m.arch);
  ProganSpec s;
  s.nz = m.nz;
  s.resolution = m.resolution;
  s.channels = m.channels;
  s.fmap_base = m.fmap_base;
  s.fmap_max = m.fmap_max;
  s.mbstd_group = m.mbstd_group;
  s.leaky_slope = m.leaky_slope;
  progan_resolutions(s);  // checks the resolution and widths, naming the key
  return s;
}

namespace {

// A per-resolution list key: one value for all resolutions or one for each; empty gives `fallback` everywhere.
std::vector<double> per_resolution(const std::string& key, const std::string& text, bool integers, size_t count,
                                   double fallback) {
  const std::optional<std::vector<double>> values = parse_number_list(text, integers);
  if (!values) user_error("{} must be a comma-separated list of positive {}, got '{}'", key, integers ? "integers" : "numbers", text);
  if (values->empty()) return std::vector<double>(count, fallback);
  if (values->size() == 1) return std::vector<double>(count, values->front());
  if (values->size() != count)
    user_error("{} has {} values but the run has {} resolutions (4x4 to the final one): give one for each, or a single "
               "one for all",
               key, values->size(), count);
  return *values;
}

}  // namespace

ProganSchedule progan_schedule(const Config& cfg) {
  const ProganSpec spec = progan_spec(cfg.model);
  const std::vector<int> resolutions = progan_resolutions(spec);
  const size_t n = resolutions.size();
  const std::vector<double> length = per_resolution("progan.phase_length", cfg.progan.phase_length, true, n, 1000);
  const std::vector<double> batch =
      per_resolution("progan.batch", cfg.progan.batch, true, n, static_cast<double>(cfg.train.batch_size));
  const std::vector<double> lr = per_resolution("progan.lr", cfg.progan.lr, false, n, 0);
  const bool images = cfg.progan.phase_unit == "images";
  ProganSchedule s;
  s.n_critic = cfg.train.n_critic;
  int64_t step = 0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t b = static_cast<int64_t>(batch[i]);
    const int64_t len = static_cast<int64_t>(length[i]);
    // Images are rounded up to whole steps (each step reads batch * n_critic real images).
    const int64_t steps = images ? (len + b * s.n_critic - 1) / (b * s.n_critic) : len;
    for (bool fading : {true, false}) {
      if (fading && resolutions[i] == 4) continue;
      ProganPhase p;
      p.index = static_cast<int>(s.phases.size());
      p.resolution = resolutions[i];
      p.fading = fading;
      p.first_step = step;
      p.steps = steps;
      p.batch = b;
      p.lr_g = lr[i] > 0 ? lr[i] : cfg.optim_g.lr;
      p.lr_d = lr[i] > 0 ? lr[i] : cfg.optim_d.lr;
      s.phases.push_back(p);
      step += steps;
    }
  }
  return s;
}

Tensor upsample_to(const Tensor& images, int64_t resolution) {
  Tensor out = images;
  while (out.dim(2) < resolution) {
    Tensor up({out.dim(0), out.dim(1), 2 * out.dim(2), 2 * out.dim(3)});
    cpu::upsample2x_forward(up.f32(), out.f32(), static_cast<int>(out.dim(0) * out.dim(1)), static_cast<int>(out.dim(2)),
                            static_cast<int>(out.dim(3)));
    out = up;
  }
  GT_CHECK(out.dim(2) == resolution, "images of {} do not upsample to {}", images.str(), resolution);
  return out;
}

void progan_reals(const Tensor& full, Tensor& out, bool fading, double alpha) {
  GT_CHECK(full.ndim() == 4 && out.ndim() == 4 && full.dim(0) == out.dim(0) && full.dim(1) == out.dim(1),
           "progan_reals from {} into {}", full.str(), out.str());
  const int n = static_cast<int>(full.dim(0) * full.dim(1));
  const int64_t r = out.dim(2);
  Tensor x = full;
  for (int64_t side = full.dim(2); side > r; side /= 2) {
    GT_CHECK(side % 2 == 0 && side / 2 >= r, "images of {} cannot be pooled to {}", full.str(), r);
    Tensor half({full.dim(0), full.dim(1), side / 2, side / 2});
    cpu::avgpool2x_forward(half.f32(), x.f32(), n, static_cast<int>(side), static_cast<int>(side));
    x = half;
  }
  if (!fading) {
    out.copy_from(x);
    return;
  }
  Tensor low({full.dim(0), full.dim(1), r / 2, r / 2}), up(out.shape());
  cpu::avgpool2x_forward(low.f32(), x.f32(), n, static_cast<int>(r), static_cast<int>(r));
  cpu::upsample2x_forward(up.f32(), low.f32(), n, static_cast<int>(r / 2), static_cast<int>(r / 2));
  cpu::lerp_forward(out.f32(), up.f32(), x.f32(), static_cast<float>(alpha), out.numel());
}

}  // namespace gt
