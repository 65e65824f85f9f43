// The run configuration: YAML -> validated struct. Every key, its type, default and range live in one schema table (schema.cpp).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/choices.h"

namespace gt {

// One network's optimizer (YAML: optim.g, optim.d), with PyTorch's update rules.
struct OptimConfig {
  OptimizerKind kind = OptimizerKind::adam;  // YAML key "name": adam | rmsprop | sgd
  // Doubles, as Python floats are in torch.optim, so derived constants (1 - beta2, lr / bias correction)
  // are computed exactly as PyTorch computes them.
  double lr = 2e-4;
  double beta1 = 0.5, beta2 = 0.999;  // adam
  double eps = 1e-8;                  // adam, rmsprop
  double alpha = 0.99;                // rmsprop smoothing constant
  double momentum = 0;                // sgd, rmsprop
  double weight_decay = 0;            // L2 added to the gradient, as torch.optim does
};

struct RunConfig {
  std::string name = "run";        // run directory name: <out_dir>/<name>
  std::string out_dir = "runs";
  int64_t seed = 1234;
  DeviceChoice device = DeviceChoice::cpu;  // cpu | cuda | auto
  int threads = 0;                 // CPU threads; 0 = all cores
  Precision precision = Precision::tf32;       // cuda: fp32 | tf32 | bf16
  LayoutChoice layout = LayoutChoice::automatic;  // cuda: auto | nchw | nhwc
  bool cuda_graph = true;          // cuda: capture the steady-state step as CUDA graphs (one rank)
  double gpu_arena_mb = 0;         // cuda: device arena for the step; 0 = sized from the model
};

struct ModelConfig {
  std::string arch = "dcgan";  // dcgan | progan
  int nz = 100;
  int g_width = 128;   // ngf
  int d_width = 128;   // ndf
  int resolution = 64; // dcgan: 32 | 64 | 128; progan: the final resolution, a power of two from 4 to 1024
  int channels = 3;    // 1 | 3
  float leaky_slope = 0.2f;
  float init_std = 0.02f;
  NormChoice d_norm = NormChoice::batch;  // D's hidden layers: batch norm (DCGAN), layer norm or none
  NormChoice g_norm = NormChoice::batch;  // G's hidden layers, the same choices
  int fmap_base = 16384;  // progan: feature maps at resolution r are min(fmap_base / r, fmap_max)
  int fmap_max = 512;
  int mbstd_group = 4;    // progan: samples per minibatch-standard-deviation group (consecutive global samples)
};

// Progressive growing (model.arch progan): the phases and their batches (train/progressive.h). The lists are
// comma-separated numbers, one for every resolution (4x4 up) or a single one for all; empty = the default.
struct ProganConfig {
  std::string phase_length = "1000";  // each resolution's transition and stable phase (4x4: stable only)
  std::string phase_unit = "steps";   // steps | images (real images, as the paper counts)
  std::string batch = "";             // global batch per resolution; "" = train.batch_size
  std::string lr = "";                // learning rate of G and D per resolution; "" = optim.g.lr and optim.d.lr
  bool reset_optimizer = true;        // fresh optimizer state at the start of every phase (the paper's code)
};

struct DataConfig {
  std::string source = "synthetic";  // synthetic | fashion-mnist | hdf5
  std::string path = "";             // fashion-mnist: directory of the IDX files ("" = the Debian package's); hdf5: the .h5 file
  int64_t synthetic_count = 4096;    // synthetic: number of images
  bool flip = false;                 // random horizontal flips
  int prefetch_batches = 4;          // batches the loader reads ahead on its threads; 0 = read on the training thread
  int loader_threads = 1;            // batches read at the same time, each by its own thread
};

struct TrainConfig {
  int64_t batch_size = 1024;   // global batch
  int64_t epochs = 100;
  int64_t max_steps = 0;       // 0 = run all epochs (or max_images)
  int64_t max_images = 0;      // 0 = off; else train on this many images (whole steps, rounded up), when max_steps is 0
  double max_minutes = 0;      // 0 = no time limit; else stop (with a checkpoint) after this many minutes
  float clip_grad_norm = 0.f;  // 0 = off
  StopSignal stop_signal = StopSignal::usr1;  // stops like SIGTERM/SIGINT (docs/cluster.md)
  NanPolicy nan_policy = NanPolicy::stop;     // a non-finite loss: stop, or reload the last checkpoint
  int nan_max_rollbacks = 3;                  // rollback: at most this many per run, then stop
  int n_critic = 1;                           // D (critic) updates per G update, each on its own real batch
  bool g_fresh_noise = false;                 // the G update draws its own noise instead of reusing the last fakes
  LrScaling lr_scaling = LrScaling::none;     // optim.*.lr scaled by batch / lr_base_batch (linear) or its root
  int64_t lr_base_batch = 256;                // the batch the configured learning rates are for
  int64_t warmup_steps = 0;                   // learning rates ramp up linearly over this many steps; 0 = none
  int64_t micro_batch = 0;   // images per forward/backward on a rank; its share is accumulated over them; 0 = planned
  double memory_mb = 0;      // the plan's budget per rank for a micro-batch's activations; 0 = none (cpu) or measured (cuda)
};

// The GAN objective (train/gan_step.h GanObjective, core/loss_math.h).
struct LossConfig {
  Objective objective = Objective::nonsaturating;  // nonsaturating BCE (DCGAN), wgan, hinge
  float drift = 0.f;        // epsilon: epsilon * mean(D(x)^2) added to D's loss; 0 = none
  float clip_critic = 0.f;  // WGAN: D's weights clamped to [-c, c] after each update; 0 = off (wgan needs it)
  float gp_weight = 0.f;    // WGAN-GP's lambda: lambda * mean((||grad_x D(x_hat)|| - 1)^2) added to D's loss; 0 = none
  int gp_every = 1;         // lazy regularization: the penalty on every k-th critic batch, scaled by k
};

struct LogConfig {
  int64_t every_steps = 50;
  int64_t sample_every_steps = 500;  // 0 = only at the end
  int sample_count = 64;
  bool tensorboard = true;  // TensorBoard event files beside metrics.jsonl (docs/formats.md)
  int64_t swd_every_steps = 0;  // 0 = off; else the SWD of G's samples every this many steps (train/swd_meter.h)
  int64_t swd_images = 2048;    // generated images, and real images, per SWD evaluation
};

struct CheckpointConfig {
  std::string resume = "auto";  // auto | never | path of a checkpoint .h5 (docs/user-guide.md, Resume)
  int64_t every_steps = 0;      // 0 = only at the end (and on a stop)
  double every_minutes = 0;     // 0 = off; else also every this many minutes of training
  int keep_last = 5;            // newest checkpoints kept; 0 = keep all
  double keep_every_hours = 0;  // also keep one checkpoint per this many hours; 0 = off
};

struct DistConfig {
  DistBackend backend = DistBackend::automatic;  // auto | mpi | local | nccl (docs/distributed.md)
  bool sync_bn = true;           // batch-norm statistics over the global batch; false = each rank's own
  double bucket_mb = 25;         // gradients all-reduced in buckets of about this many MiB
  double timeout_s = 600;        // a collective waiting longer fails the job; 0 = wait forever
  ReducePrecision reduce_precision = ReducePrecision::fp32;  // the gradient all-reduce's wire format
};

// The moving average of G's weights (G_ema), kept on every rank by the engine (train/engine.h).
struct EmaConfig {
  double beta = 0;              // per-step decay; 0 = off (unless half_life_images)
  double half_life_images = 0;  // beta = 0.5^(batch / half_life) instead; 0 = unused
  double rampup = 0;            // with a half-life: at most images_seen * rampup early on; 0 = none
  bool enabled() const { return beta > 0 || half_life_images > 0; }
};

struct Config {
  RunConfig run;
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  LossConfig loss;
  ProganConfig progan;
  EmaConfig ema;
  OptimConfig optim_g;  // YAML: optim.g
  OptimConfig optim_d;  // YAML: optim.d
  LogConfig log;
  CheckpointConfig checkpoint;
  DistConfig dist;
};

// The numbers of a list key's text ("1000, 2000", e.g. progan.batch): empty for empty text, nullopt when an
// item is not a positive number (an integer when integers).
std::optional<std::vector<double>> parse_number_list(const std::string& text, bool integers);

// Loads a YAML file, applies "key.path=value" overrides, validates. Any problem raises UserError
// naming the file and key (with a did-you-mean for unknown keys).
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// Same from YAML text (source names it in messages).
Config parse_config(const std::string& yaml_text, const std::string& source, const std::vector<std::string>& overrides = {});
// The resolved config as YAML with every key (defaults filled in).
std::string config_to_yaml(const Config& c);

// The "key.path: value" pairs of YAML as config_to_yaml writes it (nested keys, two spaces per level),
// in text order: "train.max_steps", "20".
struct ConfigValue {
  std::string path, value;
};
std::vector<ConfigValue> flatten_config_yaml(const std::string& text);

// One documented key of the schema (for docs/config.md and its test).
struct ConfigKeyInfo {
  std::string path;     // "optim.g.lr"
  std::string type;     // "int", "float", "string", "bool"
  std::string default_value;  // as YAML text, e.g. "0.0002", "cpu", "\"\"" for an empty string
  std::string allowed;        // the constraint in words: ">= 1", "one of 32, 64, 128", "any"
  std::string doc;
};
std::vector<ConfigKeyInfo> config_schema();

}  // namespace gt
