// gt_oracle_tool: runs one DCGAN training step, one step of any objective, the gradient penalty's double backward, or K optimizer steps from an HDF5 input written by the PyTorch oracle tests and writes the results back.
//
// Usage
//   gt_oracle_tool dcgan-step IN.h5 OUT.h5
//   gt_oracle_tool gan-step IN.h5 OUT.h5
//   gt_oracle_tool penalty IN.h5 OUT.h5
//   gt_oracle_tool progan IN.h5 OUT.h5
//   gt_oracle_tool optim NAME IN.h5 OUT.h5        (NAME: adam | rmsprop | sgd)
//
// Both inputs are checkpoints in gantrain's layout (read with load_checkpoint, so /meta carries the
// attributes save_checkpoint writes); the outputs are written with save_checkpoint.
//
// dcgan-step IN.h5
//   /meta           the checkpoint attributes; `resolution` is the model's resolution, and the extra
//                   integer attributes nz, g_width, d_width, channels complete the DcganSpec
//                   (leaky slope 0.2)
//   /G/params/*     netG.state_dict(): weights and BatchNorm buffers under PyTorch names
//   /D/params/*     netD.state_dict()
//   /meta/config    YAML text whose optim.g holds the Adam settings (lr, beta1, beta2, eps,
//                   weight_decay), used for both G and D; parsed by parse_config, so exact doubles
//   /inputs/real    f32 [N, C, H, W]
//   /inputs/z       f32 [N, nz]
// dcgan-step OUT.h5
//   /meta                  copied from IN.h5
//   /outputs/fake          G(z) in train mode before the step (on a separate copy of G)
//   /outputs/d_real_logits D(real) in train mode before the step, [N] (on a separate copy of D)
//   /outputs/step_fake     the fakes the step itself made (StepResult::fake)
//   /outputs/d_loss, g_loss, d_real, d_fake   f32 [1]: StepResult's scalars
//   /G/params, /D/params   parameters and buffers after the step
//   /G/optim, /D/optim     Adam state after the step: /<net>/optim/<kind>/<param>, /<net>/optim/step
//
// gan-step IN.h5: as dcgan-step, except
//   /meta/config    a whole config's YAML text: loss.*, model.d_norm, model.g_norm, train.n_critic (K),
//                   train.micro_batch (accumulation), train.clip_grad_norm, optim.g and optim.d
//   /inputs/real    f32 [K*N, C, H, W]: critic iteration k takes rows [k*N, (k+1)*N)
//   /inputs/z       f32 [Z*N, nz], the same way: Z = K noise batches, and one more for the G update
//                   when train.g_fresh_noise
// gan-step OUT.h5: /meta, /outputs/step_fake (the last iteration's fakes) and the scalars (D's of the
//   last critic iteration), /G/params and /D/params after the step; with loss.gp_weight > 0 also
//   /outputs/mix [K*N] (the interpolation weights drawn with run.seed, batch k for iteration k) and
//   /outputs/d_penalty
//
// penalty IN.h5: /meta as dcgan-step (model.d_norm and loss.gp_weight from /meta/config), /D/params,
//   /inputs/x f32 [N, C, H, W]
// penalty OUT.h5: /outputs/penalty (gp_weight * mean (||grad_x D(x)|| - 1)^2), /outputs/grad_x, and
//   /D/grads/<name>: the penalty's gradient with respect to each of D's parameters (double backward)
//
// progan IN.h5: one phase of the Progressive GAN (nn/progan.h) at /meta resolution r with fade-in weight
//   /meta alpha; the integer attributes final_resolution, fading (0/1), nz, channels, fmap_base, fmap_max and
//   mbstd_group complete the ProganSpec; loss.gp_weight from /meta/config. /G/params, /D/params under our names;
//   /inputs/z f32 [N, nz], /inputs/dy f32 [N, C, r, r] (the gradient handed to G's output), /inputs/x f32 [N, C, r, r].
// progan OUT.h5: /outputs/fake G(z), /outputs/grad_z and /G/grads/<name> of G's backward from dy;
//   /outputs/scores D(x) [N], /outputs/grad_x and /D/grads_first/<name> of D's backward from ones;
//   /outputs/penalty (gp_weight * mean (||grad_x|| - 1)^2) and /D/grads/<name>, its double backward.
//
// optim IN.h5
//   /meta           the checkpoint attributes plus the integer attribute `steps` (K)
//   /meta/config    YAML text whose optim.g holds lr, beta1, beta2, eps, alpha, momentum, weight_decay
//   /params/<name>  initial parameter values
//   /grads/<k>/<name> for k = 0 .. K-1: the gradient handed to step k
// optim OUT.h5
//   /meta, /params/<name> after K steps, /optim/<kind>/<name> and /optim/step
//
// Exit status: 0 done, 2 bad usage or input (message names the file and what is missing), 1 failure.
#include <cstdio>
#include <deque>
#include <exception>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/rng.h"
#include "io/checkpoint.h"
#include "nn/dcgan.h"
#include "nn/progan.h"
#include "train/cpu_step.h"
#include "train/trainer.h"
#include "train/model_state.h"
#include "train/optim.h"

namespace {

using namespace gt;

struct InputFile {
  std::string path;
  Checkpoint ckpt;
};

const Tensor& require_tensor(const InputFile& in, const std::string& group, const std::string& name) {
  const Tensor* t = in.ckpt.find(group, name);
  if (!t) user_error("{} has no tensor /{}/{}", in.path, group, name);
  return *t;
}

// Hyper-parameters come as config text in /meta/config (optim.g), parsed by the real config code so
// they are the same doubles PyTorch uses.
OptimConfig read_hparams(const InputFile& in, const std::string& name) {
  OptimConfig c = parse_config(in.ckpt.meta.config_yaml, in.path + ":/meta/config").optim_g;
  if (!parse_choice(name, &c.kind)) user_error("unknown optimizer '{}' (adam, rmsprop, sgd)", name);
  return c;
}

int64_t require_meta_int(const InputFile& in, const std::string& name) {
  auto it = in.ckpt.meta.ints.find(name);
  if (it == in.ckpt.meta.ints.end()) user_error("{} has no integer attribute /meta/{}", in.path, name);
  return it->second;
}

Tensor scalar_f32(double v) { return Tensor::from({1}, {static_cast<float>(v)}); }

// ---- dcgan-step --------------------------------------------------------------------------------

// What both step commands write: the step's fakes and scalars under /outputs, G's and D's parameters and
// buffers after the step.
void write_step_outputs(const StepResult& r, Sequential& G, Sequential& D, TensorGroups& groups) {
  auto& outputs = groups["outputs"];
  outputs.emplace_back("step_fake", r.fake.clone());
  outputs.emplace_back("d_loss", scalar_f32(r.d_loss));
  outputs.emplace_back("g_loss", scalar_f32(r.g_loss));
  outputs.emplace_back("d_real", scalar_f32(r.d_real));
  outputs.emplace_back("d_fake", scalar_f32(r.d_fake));
  export_state_dict(G, "G/params", groups);
  export_state_dict(D, "D/params", groups);
}

DcganSpec read_dcgan_spec(const InputFile& in) {
  DcganSpec s;
  s.nz = static_cast<int>(require_meta_int(in, "nz"));
  s.g_width = static_cast<int>(require_meta_int(in, "g_width"));
  s.d_width = static_cast<int>(require_meta_int(in, "d_width"));
  s.channels = static_cast<int>(require_meta_int(in, "channels"));
  s.resolution = static_cast<int>(in.ckpt.meta.resolution);
  s.leaky_slope = 0.2f;
  // D's and G's normalization from model.d_norm and model.g_norm of the config text, when there is one.
  if (!in.ckpt.meta.config_yaml.empty()) {
    const DcganSpec from_config = dcgan_spec(parse_config(in.ckpt.meta.config_yaml, in.path + ":/meta/config").model);
    s.d_norm = from_config.d_norm;
    s.g_norm = from_config.g_norm;
  }
  return s;
}

OptimConfig read_adam_config(const InputFile& in) { return read_hparams(in, "adam"); }

// A model built from the spec with the state_dict of IN.h5 loaded.
Sequential load_net(bool generator, const DcganSpec& spec, const InputFile& in) {
  Sequential net = generator ? make_dcgan_generator(spec) : make_dcgan_discriminator(spec);
  import_state_dict(net, in.ckpt, generator ? "G/params" : "D/params", in.path);
  return net;
}

void check_batch_shapes(const InputFile& in, const DcganSpec& spec, const Tensor& real, const Tensor& z) {
  const Shape want_real = {real.ndim() == 4 ? real.dim(0) : -1, spec.channels, spec.resolution, spec.resolution};
  if (real.dtype() != DType::f32 || real.shape() != want_real)
    user_error("{}: /inputs/real is {} but the model expects f32{}", in.path, real.str(), shape_str(want_real));
  const Shape want_z = {real.dim(0), spec.nz};
  if (z.dtype() != DType::f32 || z.shape() != want_z)
    user_error("{}: /inputs/z is {} but the model expects f32{}", in.path, z.str(), shape_str(want_z));
}

// G(z) and D(real) in train mode on fresh copies, so the step proper starts from untouched BN buffers.
void write_pre_step_outputs(const InputFile& in, const DcganSpec& spec, const Tensor& real, const Tensor& z,
                            TensorGroups& out) {
  Sequential g_probe = load_net(true, spec, in);
  Sequential d_probe = load_net(false, spec, in);
  Tensor fake = g_probe.forward(z.reshaped({z.dim(0), z.dim(1), 1, 1}), Mode::train);
  Tensor logits = d_probe.forward(real, Mode::train);
  out["outputs"].emplace_back("fake", fake.clone());
  out["outputs"].emplace_back("d_real_logits", logits.reshaped({logits.numel()}).clone());
}

int run_dcgan_step(const std::string& in_path, const std::string& out_path) {
  InputFile in{in_path, load_checkpoint(in_path)};
  const DcganSpec spec = read_dcgan_spec(in);
  const OptimConfig adam = read_adam_config(in);
  const Tensor& real = require_tensor(in, "inputs", "real");
  const Tensor& z = require_tensor(in, "inputs", "z");
  check_batch_shapes(in, spec, real, z);

  Checkpoint out;
  out.meta = in.ckpt.meta;
  write_pre_step_outputs(in, spec, real, z, out.groups);

  Sequential G = load_net(true, spec, in);
  Sequential D = load_net(false, spec, in);
  auto opt_g = make_optimizer(adam, G.named_params());
  auto opt_d = make_optimizer(adam, D.named_params());
  GanModels models{&G, &D, opt_g.get(), opt_d.get()};
  const StepResult r = dcgan_train_step(models, real, z, StepOptions{});

  write_step_outputs(r, G, D, out.groups);
  export_optimizer(*opt_g, "G/optim", out.groups);
  export_optimizer(*opt_d, "D/optim", out.groups);
  save_checkpoint(out_path, out);
  std::printf("dcgan-step: d_loss %.6f g_loss %.6f D(x) %.4f D(G(z)) %.4f -> %s\n", r.d_loss, r.g_loss, r.d_real,
              r.d_fake, out_path.c_str());
  return 0;
}

// ---- gan-step ----------------------------------------------------------------------------------
// One step of any objective: the config text in /meta/config gives loss.*, train.n_critic and both
// optimizers (optim.g, optim.d); /inputs/real holds n_critic batches one after another [K*N, C, H, W]
// and /inputs/z their noise [K*N, nz]. Writes the scalars and the parameters and buffers after the step.
int run_gan_step_case(const std::string& in_path, const std::string& out_path) {
  InputFile in{in_path, load_checkpoint(in_path)};
  const DcganSpec spec = read_dcgan_spec(in);
  const Config cfg = parse_config(in.ckpt.meta.config_yaml, in_path + ":/meta/config");
  const GanObjective objective = gan_objective(cfg);
  const Tensor& real = require_tensor(in, "inputs", "real");
  const Tensor& z = require_tensor(in, "inputs", "z");
  const int64_t K = objective.n_critic, Z = objective.noise_batches();
  if (real.ndim() != 4 || real.dim(0) % K != 0)
    user_error("{}: /inputs/real {} does not hold {} equal batches", in_path, real.str(), K);
  const int64_t N = real.dim(0) / K;
  if (z.ndim() != 2 || z.dim(0) != Z * N || z.dim(1) != spec.nz)
    user_error("{}: /inputs/z is {}, expected f32[{}, {}] ({} noise batches)", in_path, z.str(), Z * N, spec.nz, Z);
  std::vector<Tensor> reals, zs;
  const int64_t image = real.numel() / real.dim(0);
  for (int64_t k = 0; k < K; ++k) {
    Tensor r({N, real.dim(1), real.dim(2), real.dim(3)});
    std::copy_n(real.f32() + k * N * image, N * image, r.f32());
    reals.push_back(r);
  }
  for (int64_t k = 0; k < Z; ++k) {
    Tensor q({N, z.dim(1)});
    std::copy_n(z.f32() + k * N * z.dim(1), N * z.dim(1), q.f32());
    zs.push_back(q);
  }
  Sequential G = load_net(true, spec, in);
  Sequential D = load_net(false, spec, in);
  auto opt_g = make_optimizer(cfg.optim_g, G.named_params());
  auto opt_d = make_optimizer(cfg.optim_d, D.named_params());
  GanModels models{&G, &D, opt_g.get(), opt_d.get()};
  StepOptions options;
  options.objective = objective;
  options.clip_grad_norm = cfg.train.clip_grad_norm;
  options.seed = cfg.run.seed;
  // train.micro_batch: the rows of each batch in micro-batches whose gradients accumulate (one rank).
  options.accumulation = static_cast<int>(cfg.train.micro_batch > 0 ? N / cfg.train.micro_batch : 1);
  if (cfg.train.micro_batch > 0 && N % cfg.train.micro_batch != 0)
    user_error("{}: train.micro_batch {} does not divide the batch of {}", in_path, cfg.train.micro_batch, N);
  const StepResult r = gan_train_step(models, reals, zs, options);

  Checkpoint out;
  out.meta = in.ckpt.meta;
  write_step_outputs(r, G, D, out.groups);
  if (objective.gp_weight > 0) {
    // The interpolation weights the step drew (batch k of step 0 for critic iteration k), for torch to use.
    Tensor mix({K * N});
    for (int64_t k = 0; k < K; ++k) fill_penalty_mix(mix.f32() + k * N, N, cfg.run.seed, static_cast<uint64_t>(k), 0);
    out.groups["outputs"].emplace_back("mix", mix);
    out.groups["outputs"].emplace_back("d_penalty", scalar_f32(r.d_penalty));
  }
  save_checkpoint(out_path, out);
  std::printf("gan-step %s n_critic %lld: d_loss %.6g g_loss %.6g D(x) %.6g D(G(z)) %.6g -> %s\n",
              choice_name(cfg.loss.objective), static_cast<long long>(K), r.d_loss, r.g_loss, r.d_real, r.d_fake,
              out_path.c_str());
  return 0;
}

// ---- penalty -----------------------------------------------------------------------------------
// The gradient penalty alone on D at given inputs: D's parameter gradients of loss.gp_weight * mean over
// the rows of (||grad_x D(x)|| - 1)^2 through the double backward, the input gradient and the penalty.
int run_penalty(const std::string& in_path, const std::string& out_path) {
  InputFile in{in_path, load_checkpoint(in_path)};
  const DcganSpec spec = read_dcgan_spec(in);
  const Config cfg = parse_config(in.ckpt.meta.config_yaml, in_path + ":/meta/config");
  const Tensor& x = require_tensor(in, "inputs", "x");
  const Shape want = {x.ndim() == 4 ? x.dim(0) : -1, spec.channels, spec.resolution, spec.resolution};
  if (x.dtype() != DType::f32 || x.shape() != want)
    user_error("{}: /inputs/x is {} but the model expects f32{}", in_path, x.str(), shape_str(want));
  Sequential D = load_net(false, spec, in);
  D.zero_grad();
  CpuStepOps ops;
  const Tensor scores = D.forward(x, Mode::train);
  BackwardOptions first;
  first.param_grads = false;
  first.input_grad = true;
  first.create_graph = true;
  const Tensor g = D.backward(ops.ones_like(scores), first);
  Tensor v = ops.buffer_like(g);
  ops.gradient_penalty(g, cfg.loss.gp_weight, 1.f, v, StepScalar::penalty, {});
  D.backward_of_input_grad(v, {});

  Checkpoint out;
  out.meta = in.ckpt.meta;
  out.groups["outputs"].emplace_back("penalty", scalar_f32(ops.scalars()[static_cast<int>(StepScalar::penalty)]));
  out.groups["outputs"].emplace_back("grad_x", g.clone());
  for (const NamedParam& p : D.named_params()) out.groups["D/grads"].emplace_back(p.name, p.param->grad.clone());
  save_checkpoint(out_path, out);
  std::printf("penalty: %.6g over %lld samples -> %s\n", ops.scalars()[static_cast<int>(StepScalar::penalty)],
              static_cast<long long>(x.dim(0)), out_path.c_str());
  return 0;
}

// ---- progan ------------------------------------------------------------------------------------
// One phase's G and D: forward, backward and the penalty's double backward, for the torch oracle of the layers.
int run_progan(const std::string& in_path, const std::string& out_path) {
  InputFile in{in_path, load_checkpoint(in_path)};
  ProganSpec spec;
  spec.resolution = static_cast<int>(require_meta_int(in, "final_resolution"));
  spec.nz = static_cast<int>(require_meta_int(in, "nz"));
  spec.channels = static_cast<int>(require_meta_int(in, "channels"));
  spec.fmap_base = static_cast<int>(require_meta_int(in, "fmap_base"));
  spec.fmap_max = static_cast<int>(require_meta_int(in, "fmap_max"));
  spec.mbstd_group = static_cast<int>(require_meta_int(in, "mbstd_group"));
  const bool fading = require_meta_int(in, "fading") != 0;
  const int r = static_cast<int>(in.ckpt.meta.resolution);
  const float alpha = static_cast<float>(in.ckpt.meta.alpha);
  const Config cfg = parse_config(in.ckpt.meta.config_yaml, in_path + ":/meta/config");
  const Tensor& z = require_tensor(in, "inputs", "z");
  const Tensor& dy = require_tensor(in, "inputs", "dy");
  const Tensor& x = require_tensor(in, "inputs", "x");
  const Shape image = {x.ndim() == 4 ? x.dim(0) : -1, spec.channels, r, r};
  if (x.shape() != image || dy.shape() != image || z.shape() != Shape({image[0], spec.nz}))
    user_error("{}: inputs x {}, dy {} and z {} do not fit the phase's images {} and nz {}", in_path, x.str(), dy.str(),
               z.str(), shape_str(image), spec.nz);

  Checkpoint out;
  out.meta = in.ckpt.meta;
  auto& outputs = out.groups["outputs"];

  Sequential G = make_progan_generator(spec, r, fading);
  import_state_dict(G, in.ckpt, "G/params", in.path);
  G.set_fade_alpha(alpha);
  G.zero_grad();
  const Tensor fake = G.forward(z.reshaped({z.dim(0), z.dim(1), 1, 1}), Mode::train);
  const Tensor dz = G.backward(dy, {.param_grads = true, .input_grad = true, .on_final = {}});
  outputs.emplace_back("fake", fake.clone());
  outputs.emplace_back("grad_z", dz.reshaped({z.dim(0), z.dim(1)}).clone());
  for (const NamedParam& p : G.named_params()) out.groups["G/grads"].emplace_back(p.name, p.param->grad.clone());

  Sequential D = make_progan_discriminator(spec, r, fading);
  import_state_dict(D, in.ckpt, "D/params", in.path);
  D.set_fade_alpha(alpha);
  D.zero_grad();
  CpuStepOps ops;
  const Tensor scores = D.forward(x, Mode::train);
  BackwardOptions first;
  first.input_grad = true;
  first.create_graph = true;
  const Tensor g = D.backward(ops.ones_like(scores), first);
  outputs.emplace_back("scores", scores.reshaped({scores.numel()}).clone());
  outputs.emplace_back("grad_x", g.clone());
  for (const NamedParam& p : D.named_params()) out.groups["D/grads_first"].emplace_back(p.name, p.param->grad.clone());
  D.zero_grad();
  Tensor v = ops.buffer_like(g);
  ops.gradient_penalty(g, cfg.loss.gp_weight, 1.f, v, StepScalar::penalty, {});
  D.backward_of_input_grad(v, {});
  const double penalty = ops.scalars()[static_cast<int>(StepScalar::penalty)];
  outputs.emplace_back("penalty", scalar_f32(penalty));
  for (const NamedParam& p : D.named_params()) out.groups["D/grads"].emplace_back(p.name, p.param->grad.clone());
  save_checkpoint(out_path, out);
  std::printf("progan %dx%d%s alpha %.3f: G %lld and D %lld parameters, penalty %.6g -> %s\n", r, r,
              fading ? " (fading in)" : "", alpha, static_cast<long long>(G.param_count()),
              static_cast<long long>(D.param_count()), penalty, out_path.c_str());
  return 0;
}

// ---- optim -------------------------------------------------------------------------------------

OptimConfig read_optim_config(const InputFile& in, const std::string& name) {
  if (name != "adam" && name != "rmsprop" && name != "sgd")
    user_error("optimizer name must be adam, rmsprop or sgd, got '{}'", name);
  return read_hparams(in, name);
}

int run_optim(const std::string& name, const std::string& in_path, const std::string& out_path) {
  InputFile in{in_path, load_checkpoint(in_path)};
  const OptimConfig cfg = read_optim_config(in, name);
  const int64_t steps = require_meta_int(in, "steps");
  if (steps < 1) user_error("{}: /meta/steps must be at least 1, got {}", in_path, steps);

  auto found = in.ckpt.groups.find("params");
  if (found == in.ckpt.groups.end() || found->second.empty()) user_error("{} has no tensors in /params", in_path);
  std::deque<Param> storage;  // deque: Param addresses stay valid while it grows
  std::vector<NamedParam> params;
  for (const auto& [pname, value] : found->second) {
    if (value.dtype() != DType::f32) user_error("{}: /params/{} must be float32, got {}", in_path, pname, value.str());
    storage.push_back(Param{pname, value.clone(), Tensor(value.shape())});
    params.push_back({pname, &storage.back()});
  }

  auto opt = make_optimizer(cfg, params);
  for (int64_t k = 0; k < steps; ++k) {
    const std::string group = "grads/" + std::to_string(k);
    for (auto& p : params) {
      const Tensor& g = require_tensor(in, group, p.name);
      if (g.dtype() != DType::f32 || g.shape() != p.param->value.shape())
        user_error("{}: /{}/{} is {} but the parameter is {}", in_path, group, p.name, g.str(), p.param->value.str());
      p.param->grad.copy_from(g);
    }
    opt->step();
  }

  Checkpoint out;
  out.meta = in.ckpt.meta;
  for (auto& p : params) out.groups["params"].emplace_back(p.name, p.param->value.clone());
  export_optimizer(*opt, "optim", out.groups);
  save_checkpoint(out_path, out);
  std::printf("optim %s: %lld steps on %zu tensors -> %s\n", name.c_str(), static_cast<long long>(steps),
              params.size(), out_path.c_str());
  return 0;
}

int usage() {
  std::fprintf(stderr,
               "usage: gt_oracle_tool dcgan-step IN.h5 OUT.h5\n"
               "       gt_oracle_tool gan-step IN.h5 OUT.h5\n"
               "       gt_oracle_tool penalty IN.h5 OUT.h5\n"
               "       gt_oracle_tool progan IN.h5 OUT.h5\n"
               "       gt_oracle_tool optim adam|rmsprop|sgd IN.h5 OUT.h5\n"
               "(the file layouts are described at the top of tests/oracle/oracle_tool.cpp)\n");
  return 2;
}

int dispatch(const std::vector<std::string>& args) {
  if (args.size() == 3 && args[0] == "dcgan-step") return run_dcgan_step(args[1], args[2]);
  if (args.size() == 3 && args[0] == "gan-step") return run_gan_step_case(args[1], args[2]);
  if (args.size() == 3 && args[0] == "penalty") return run_penalty(args[1], args[2]);
  if (args.size() == 3 && args[0] == "progan") return run_progan(args[1], args[2]);
  if (args.size() == 4 && args[0] == "optim") return run_optim(args[1], args[2], args[3]);
  return usage();
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return dispatch(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const gt::UserError& e) {
    std::fprintf(stderr, "gt_oracle_tool: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gt_oracle_tool: error: %s\n", e.what());
    return 1;
  }
}
