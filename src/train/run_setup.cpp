// The run's planned length, its host models from the seed, and their state from a checkpoint.
#include "train/run_setup.h"

#include <algorithm>

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
  return m;
}

void load_models(Models& m, const Checkpoint& ck, const std::string& source) {
  import_state_dict(m.G, ck, "G/params", source);
  import_state_dict(m.D, ck, "D/params", source);
  import_optimizer(*m.opt_g, ck, "G/optim", source);
  import_optimizer(*m.opt_d, ck, "D/optim", source);
}

}  // namespace gt
