// The run's planned length, its host models from the seed, and their state from a checkpoint.
#include "train/run_setup.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

#include "train/model_state.h"

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

}  // namespace gt
