// The run's planned length, its host models from the seed, and their state from a checkpoint.
#include "train/run_setup.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include "core/error.h"

#include "train/model_state.h"
#include "train/trainer.h"

namespace gt {

int64_t planned_steps(const TrainConfig& train, int64_t steps_per_epoch) {
  if (train.max_steps > 0) return train.max_steps;
  const int64_t per_step = train.batch_size * train.n_critic;  // real images one step reads
  if (train.max_images > 0) return (train.max_images + per_step - 1) / per_step;
  return std::max<int64_t>(1, train.epochs * steps_per_epoch / train.n_critic);
}

std::unique_ptr<Models> make_models(const Config& cfg, const DcganSpec& spec) {
  auto m = std::make_unique<Models>();
  m->G = make_dcgan_generator(spec);
  m->D = make_dcgan_discriminator(spec);
  const uint64_t seed = static_cast<uint64_t>(cfg.run.seed);
  dcgan_init(m->G, cfg.model.init_std, seed, 1);
  dcgan_init(m->D, cfg.model.init_std, seed, 2);
  m->opt_g = make_optimizer(cfg.optim_g, m->G.named_params());
  m->opt_d = make_optimizer(cfg.optim_d, m->D.named_params());
  if (cfg.ema.enabled()) {
    m->G_ema = std::make_unique<Sequential>(make_dcgan_generator(spec));
    copy_params_to_ema(*m);
    copy_buffers_to_ema(*m);
  }
  return m;
}

bool load_models(Models& m, const Checkpoint& ck, const std::string& source) {
  import_state_dict(m.G, ck, "G/params", source);
  import_state_dict(m.D, ck, "D/params", source);
  import_optimizer(*m.opt_g, ck, "G/optim", source);
  import_optimizer(*m.opt_d, ck, "D/optim", source);
  if (!m.G_ema) return true;
  if (ck.groups.count("G_ema/params")) {
    import_state_dict(*m.G_ema, ck, "G_ema/params", source);
    return true;
  }
  copy_params_to_ema(m);
  copy_buffers_to_ema(m);
  return false;
}

void copy_params_to_ema(Models& m) {
  GT_CHECK(m.G_ema && m.G_ema->flat_size() == m.G.flat_size(), "G_ema does not mirror G");
  std::copy_n(m.G.flat_params(), m.G.flat_size(), m.G_ema->flat_params());
}

void copy_buffers_to_ema(Models& m) {
  GT_CHECK(m.G_ema, "copy_buffers_to_ema without G_ema");
  std::vector<NamedBuffer> from = m.G.named_buffers(), to = m.G_ema->named_buffers();
  GT_CHECK(from.size() == to.size(), "G_ema has {} buffers, G {}", to.size(), from.size());
  for (size_t i = 0; i < from.size(); ++i) to[i].buffer->value.copy_from(from[i].buffer->value);
}

double ema_one_minus_beta(const EmaConfig& ema, int64_t steps_done, int64_t batch) {
  if (ema.beta > 0) return 1.0 - ema.beta;
  if (ema.half_life_images <= 0) return 0.0;
  double half_life = ema.half_life_images;
  if (ema.rampup > 0) half_life = std::min(half_life, static_cast<double>(steps_done) * batch * ema.rampup);
  // 1 - 0.5^(batch / half_life), without the cancellation of 1 - (a number near 1).
  return -std::expm1(std::log(0.5) * static_cast<double>(batch) / std::max(half_life, 1e-8));
}

namespace {

OptimConfig with_lr(OptimConfig c, double lr) {
  c.lr = lr;
  return c;
}

std::map<std::string, Param*> params_by_name(Sequential& net) {
  std::map<std::string, Param*> out;
  for (const NamedParam& p : net.named_params()) out[p.name] = p.param;
  return out;
}

}  // namespace

Sequential make_checkpoint_generator(const Config& cfg, const CheckpointMeta& meta) {
  if (cfg.model.arch != "progan") return make_dcgan_generator(dcgan_spec(cfg.model));
  auto fading = meta.ints.find("fading");
  Sequential g = make_progan_generator(progan_spec(cfg.model), static_cast<int>(meta.resolution),
                                       fading != meta.ints.end() && fading->second != 0);
  g.set_fade_alpha(static_cast<float>(std::clamp(meta.alpha, 0.0, 1.0)));
  return g;
}

void copy_params_by_name(Sequential& from, Sequential& to) {
  std::map<std::string, Param*> dst = params_by_name(to);
  for (const NamedParam& p : from.named_params()) {
    auto it = dst.find(p.name);
    if (it != dst.end() && it->second->value.shape() == p.param->value.shape()) it->second->value.copy_from(p.param->value);
  }
}

namespace {

// The optimizer's state tensors that `to` has under the same name and shape, and its step count.
void carry_state(Optimizer& from, Optimizer& to) {
  std::map<std::string, Tensor*> old;
  for (const NamedState& s : from.state()) old[s.name] = s.tensor;
  for (const NamedState& s : to.state()) {
    auto it = old.find(s.name);
    if (it != old.end() && it->second->shape() == s.tensor->shape()) s.tensor->copy_from(*it->second);
  }
  to.set_step_count(from.step_count());
}

}  // namespace

std::unique_ptr<Models> make_progan_models(const Config& cfg, const ProganSpec& spec, const ProganPhase& phase) {
  auto m = std::make_unique<Models>();
  m->G = make_progan_generator(spec, phase.resolution, phase.fading);
  m->D = make_progan_discriminator(spec, phase.resolution, phase.fading);
  const uint64_t seed = static_cast<uint64_t>(cfg.run.seed);
  progan_init(m->G, seed, 1);
  progan_init(m->D, seed, 2);
  m->opt_g = make_optimizer(with_lr(cfg.optim_g, phase.lr_g), m->G.named_params());
  m->opt_d = make_optimizer(with_lr(cfg.optim_d, phase.lr_d), m->D.named_params());
  if (cfg.ema.enabled()) {
    m->G_ema = std::make_unique<Sequential>(make_progan_generator(spec, phase.resolution, phase.fading));
    copy_params_to_ema(*m);
  }
  return m;
}

void move_to_phase(Models& m, const Config& cfg, const ProganSpec& spec, const ProganPhase& phase) {
  std::unique_ptr<Models> next = make_progan_models(cfg, spec, phase);
  copy_params_by_name(m.G, next->G);
  copy_params_by_name(m.D, next->D);
  if (m.G_ema && next->G_ema) {
    copy_params_to_ema(*next);  // the new block starts from G's (initial) weights
    copy_params_by_name(*m.G_ema, *next->G_ema);
  }
  if (!cfg.progan.reset_optimizer) {
    carry_state(*m.opt_g, *next->opt_g);
    carry_state(*m.opt_d, *next->opt_d);
  }
  m.G = std::move(next->G);
  m.D = std::move(next->D);
  m.opt_g = std::move(next->opt_g);
  m.opt_d = std::move(next->opt_d);
  m.G_ema = std::move(next->G_ema);
}

}  // namespace gt
