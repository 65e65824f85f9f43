// The config schema table: every YAML key, the Config field it sets, its rule and its one-line doc.
#include "config/schema.h"

#include <algorithm>
#include <charconv>
#include <cctype>
#include <cmath>
#include <fmt/format.h>

#include "core/error.h"

namespace gt::config_detail {
namespace {

Rule any_value() { return {}; }

Rule at_least(double lo) {
  Rule r;
  r.min = lo;
  return r;
}

Rule above(double lo) {
  Rule r;
  r.min = lo;
  r.min_exclusive = true;
  return r;
}

Rule between(double lo, double hi) {
  Rule r;
  r.min = lo;
  r.max = hi;
  return r;
}

// [0, 1): decay rates and slopes, where 1 would freeze or break the update.
Rule unit_fraction() {
  Rule r;
  r.min = 0;
  r.max = 1;
  r.max_exclusive = true;
  return r;
}

Rule one_of(std::vector<std::string> choices) {
  Rule r;
  r.choices = std::move(choices);
  return r;
}

Rule non_empty_text() {
  Rule r;
  r.non_empty = true;
  return r;
}

Rule file_name() {
  Rule r;
  r.non_empty = true;
  r.file_name = true;
  return r;
}

// A comma-separated list of positive numbers (or integers) in a string key; empty allowed.
Rule positive_list(bool integers) {
  Rule r;
  r.list = integers ? Rule::List::positive_ints : Rule::List::positive_numbers;
  return r;
}

// The rule of an enum key: its names.
template <class E>
Rule choices_of() {
  return one_of(choice_names<E>());
}

// Binds a key to a Config member expression, e.g. GT_BIND(model.nz).
#define GT_BIND(member) [](Config& c) -> FieldRef { return field_ref(&c.member); }

// The eight keys of one optimizer section (optim.g or optim.d): the same rules for both networks.
void add_optimizer_keys(std::vector<KeyDef>& keys, const std::string& section, OptimConfig Config::*which,
                        const std::string& net) {
  auto bind = [which](auto OptimConfig::*field) {
    return [which, field](Config& c) -> FieldRef { return field_ref(&(c.*which.*field)); };
  };
  const std::string p = section + ".";
  keys.push_back({p + "name", bind(&OptimConfig::kind), choices_of<OptimizerKind>(),
                  net + " optimizer: adam, rmsprop or sgd, with PyTorch's update rules."});
  keys.push_back({p + "lr", bind(&OptimConfig::lr), above(0), net + " learning rate."});
  keys.push_back({p + "beta1", bind(&OptimConfig::beta1), unit_fraction(),
                  "adam: decay rate of " + net + "'s first-moment (mean) estimate."});
  keys.push_back({p + "beta2", bind(&OptimConfig::beta2), unit_fraction(),
                  "adam: decay rate of " + net + "'s second-moment (squared-gradient) estimate."});
  keys.push_back({p + "eps", bind(&OptimConfig::eps), above(0),
                  "adam, rmsprop: term added to the denominator of " + net + "'s update for stability."});
  keys.push_back({p + "alpha", bind(&OptimConfig::alpha), unit_fraction(),
                  "rmsprop: smoothing constant of " + net + "'s squared-gradient average."});
  keys.push_back({p + "momentum", bind(&OptimConfig::momentum), unit_fraction(),
                  "sgd, rmsprop: momentum factor for " + net + "; 0 = none."});
  keys.push_back({p + "weight_decay", bind(&OptimConfig::weight_decay), at_least(0),
                  "L2 penalty on " + net + "'s weights, added to the gradient as torch.optim does; 0 = none."});
}

std::vector<KeyDef> build_schema() {
  std::vector<KeyDef> k;
  // run
  k.push_back({"run.name", GT_BIND(run.name), file_name(),
               "Run name; outputs go to the directory run.out_dir/run.name."});
  k.push_back({"run.out_dir", GT_BIND(run.out_dir), non_empty_text(),
               "Directory that holds run directories."});
  k.push_back({"run.seed", GT_BIND(run.seed), at_least(0),
               "Seed for weight init, noise and data order; the same seed gives the same run."});
  k.push_back({"run.device", GT_BIND(run.device), choices_of<DeviceChoice>(),
               "Backend: cpu, cuda (an error without a GPU) or auto (cuda when every rank has a GPU)."});
  k.push_back({"run.threads", GT_BIND(run.threads), at_least(0),
               "CPU threads for the CPU backend, per rank; 0 = the cores this rank may use, shared with the "
               "other ranks of its node."});
  k.push_back({"run.precision", GT_BIND(run.precision), choices_of<Precision>(),
               "cuda: math of convolutions and GEMMs. fp32 (exact float products), tf32 (tensor cores, float "
               "storage; PyTorch's default for convolutions) or bf16 (bf16 activations, float master weights and "
               "optimizer state)."});
  k.push_back({"run.layout", GT_BIND(run.layout), choices_of<LayoutChoice>(),
               "cuda: memory layout of activations; auto = NHWC for bf16 (tensor cores read it directly), else "
               "NCHW. Parameters and checkpoints keep PyTorch's layout."});
  k.push_back({"run.cuda_graph", GT_BIND(run.cuda_graph), any_value(),
               "cuda: capture the steady-state step as CUDA graphs (single-rank runs; with several ranks the "
               "collectives run between eager launches)."});
  k.push_back({"run.gpu_arena_mb", GT_BIND(run.gpu_arena_mb), at_least(0),
               "cuda: MiB of device memory for the step's activations and temporaries; 0 = sized from the model "
               "and batch."});
  // model
  k.push_back({"model.arch", GT_BIND(model.arch), one_of({"dcgan", "progan"}),
               "Model family of G and D: dcgan (Radford et al.) or progan (Progressive GAN, Karras et al. 2018: "
               "grown from 4x4 to model.resolution in the phases of the progan section)."});
  k.push_back({"model.nz", GT_BIND(model.nz), at_least(1), "Length of the latent vector z."});
  k.push_back({"model.g_width", GT_BIND(model.g_width), at_least(1),
               "G's base width (ngf): channels of its last hidden layer, doubled towards the input."});
  k.push_back({"model.d_width", GT_BIND(model.d_width), at_least(1),
               "D's base width (ndf): channels of its first conv layer, doubled towards the output."});
  k.push_back({"model.resolution", GT_BIND(model.resolution),
               one_of({"4", "8", "16", "32", "64", "128", "256", "512", "1024"}),
               "Side of the square images in pixels; G and D get one block per doubling. dcgan: 32, 64 or 128; "
               "progan: the final resolution."});
  k.push_back({"model.channels", GT_BIND(model.channels), one_of({"1", "3"}),
               "Image channels: 1 = greyscale, 3 = RGB."});
  k.push_back({"model.leaky_slope", GT_BIND(model.leaky_slope), unit_fraction(),
               "Negative slope of D's LeakyReLU activations."});
  k.push_back({"model.init_std", GT_BIND(model.init_std), above(0),
               "Standard deviation of the normal weight init (DCGAN uses 0.02)."});
  k.push_back({"model.d_norm", GT_BIND(model.d_norm), choices_of<NormChoice>(),
               "Normalization of D's hidden layers: batch (DCGAN's BatchNorm2d), layer (per sample over C, H, W "
               "with a per-channel affine, torch.nn.GroupNorm(1, C): the WGAN-GP paper's critic) or none (the "
               "hidden convolutions get a bias instead). A gradient penalty needs layer or none."});
  k.push_back({"model.g_norm", GT_BIND(model.g_norm), choices_of<NormChoice>(),
               "Normalization of G's hidden layers: batch (DCGAN's BatchNorm2d), layer (LayerNorm2d) or none (the "
               "hidden transposed convolutions get a bias instead)."});
  k.push_back({"model.fmap_base", GT_BIND(model.fmap_base), at_least(1),
               "progan: feature maps at resolution r are min(fmap_base / r, model.fmap_max) (16384 and 512: the "
               "paper's 512 up to 32x32, then halving)."});
  k.push_back({"model.fmap_max", GT_BIND(model.fmap_max), at_least(1), "progan: the most feature maps of a layer."});
  k.push_back({"model.mbstd_group", GT_BIND(model.mbstd_group), at_least(1),
               "progan: samples per group of D's minibatch standard deviation, consecutive in the global batch; "
               "each rank's micro-batch must be a multiple of it."});
  // data
  k.push_back({"data.source", GT_BIND(data.source), one_of({"synthetic", "fashion-mnist", "hdf5"}),
               "Training images: synthetic (generated patterns, no files), fashion-mnist (IDX files) or hdf5 "
               "(a dataset file made by gantrain ingest)."});
  k.push_back({"data.path", GT_BIND(data.path), any_value(),
               "fashion-mnist: directory of the IDX files, empty = /usr/share/datasets/fashion-mnist; "
               "hdf5: the .h5 dataset file."});
  k.push_back({"data.synthetic_count", GT_BIND(data.synthetic_count), at_least(1),
               "synthetic: number of images in the dataset."});
  k.push_back({"data.flip", GT_BIND(data.flip), any_value(),
               "Flip real images horizontally at random (p = 0.5)."});
  k.push_back({"data.prefetch_batches", GT_BIND(data.prefetch_batches), at_least(0),
               "Batches the loader reads ahead of the training step; 0 = read each batch on the training thread."});
  k.push_back({"data.loader_threads", GT_BIND(data.loader_threads), at_least(1),
               "Threads that read and convert batches, each its own batch (at most data.prefetch_batches)."});
  // train
  k.push_back({"train.batch_size", GT_BIND(train.batch_size), at_least(1),
               "Global batch size: images per step over all ranks."});
  k.push_back({"train.epochs", GT_BIND(train.epochs), at_least(1), "Passes over the dataset."});
  k.push_back({"train.max_steps", GT_BIND(train.max_steps), at_least(0),
               "Stop after this many steps; 0 = run train.max_images, or all epochs. Replaces train.epochs when set."});
  k.push_back({"train.max_images", GT_BIND(train.max_images), at_least(0),
               "Stop after this many training images (whole steps of train.batch_size, rounded up) when "
               "train.max_steps is 0; 0 = run all epochs. Replaces train.epochs when set."});
  k.push_back({"train.max_minutes", GT_BIND(train.max_minutes), at_least(0),
               "Stop, with a checkpoint, after this many minutes of training; 0 = no time limit."});
  k.push_back({"train.clip_grad_norm", GT_BIND(train.clip_grad_norm), at_least(0),
               "Clip each network's gradients to this global L2 norm; 0 = no clipping."});
  k.push_back({"train.stop_signal", GT_BIND(train.stop_signal), choices_of<StopSignal>(),
               "A signal that stops the run with a checkpoint (exit 3), as SIGTERM and SIGINT do: SIGUSR1, SIGUSR2, "
               "SIGHUP or none. Choose another where the cluster or a library takes SIGUSR1 for itself."});
  k.push_back({"train.nan_policy", GT_BIND(train.nan_policy), choices_of<NanPolicy>(),
               "When a loss is not finite: stop (exit 1, naming the loss, step and rank) or rollback (reload the "
               "newest checkpoint and go on with the next batch)."});
  k.push_back({"train.nan_max_rollbacks", GT_BIND(train.nan_max_rollbacks), at_least(1),
               "rollback: the most rollbacks in one run; one more non-finite loss stops it."});
  k.push_back({"train.n_critic", GT_BIND(train.n_critic), at_least(1),
               "D (critic) updates per G update, each on its own real batch and noise (5 in the WGAN paper); a "
               "step is one G update and reads n_critic batches."});
  k.push_back({"train.g_fresh_noise", GT_BIND(train.g_fresh_noise), any_value(),
               "The G update draws noise of its own (the WGAN paper's algorithm, one more G forward per step); "
               "false: it reuses the fakes of the last D update (the DCGAN reference's step)."});
  k.push_back({"train.lr_scaling", GT_BIND(train.lr_scaling), choices_of<LrScaling>(),
               "Scale both learning rates by train.batch_size / train.lr_base_batch (linear, Goyal et al.) or its "
               "square root (sqrt); none keeps optim.*.lr as given."});
  k.push_back({"train.lr_base_batch", GT_BIND(train.lr_base_batch), at_least(1),
               "The global batch the configured learning rates were tuned for (train.lr_scaling)."});
  k.push_back({"train.warmup_steps", GT_BIND(train.warmup_steps), at_least(0),
               "Ramp both learning rates up linearly over the first steps: step t (from 0) uses (t + 1) / "
               "warmup_steps of the rate; 0 = none."});
  k.push_back({"train.micro_batch", GT_BIND(train.micro_batch), at_least(0),
               "Images per forward and backward pass on a rank: its share of the global batch is split into "
               "micro-batches whose gradients are accumulated into one update (batch norm: statistics per "
               "micro-batch). 0 = planned by rank 0 from train.memory_mb (the whole share when it fits)."});
  k.push_back({"train.memory_mb", GT_BIND(train.memory_mb), at_least(0),
               "The batch plan's budget per rank, MiB, for one micro-batch's activations and gradients (an "
               "estimate from the model's shapes); 0 = no limit on the CPU, 80% of the free memory on a GPU."});
  // loss
  k.push_back({"loss.objective", GT_BIND(loss.objective), choices_of<Objective>(),
               "The GAN objective: nonsaturating (BCE with logits, the DCGAN paper's), wgan (D a critic: -D(x) + "
               "D(G(z)), G: -D(G(z)); needs loss.clip_critic or loss.gp_weight) or hinge (D: relu(1 - D(x)) + relu(1 + D(G(z))), G: "
               "-D(G(z)))."});
  k.push_back({"loss.drift", GT_BIND(loss.drift), at_least(0),
               "epsilon of the drift term epsilon * mean(D(x)^2) added to D's loss (0.001 in the Progressive GAN "
               "paper); 0 = none."});
  k.push_back({"loss.clip_critic", GT_BIND(loss.clip_critic), at_least(0),
               "Clamp every weight of D to [-c, c] after each D update (WGAN's Lipschitz constraint; 0.01 in the "
               "WGAN paper); 0 = off."});
  k.push_back({"loss.gp_weight", GT_BIND(loss.gp_weight), at_least(0),
               "lambda of the gradient penalty lambda * mean((||grad D(x_hat)|| - 1)^2) at x_hat = e x + (1 - e) "
               "G(z), e uniform per sample, added to D's loss (WGAN-GP; 10 in its paper); 0 = none. Needs "
               "model.d_norm layer or none, and excludes loss.clip_critic."});
  k.push_back({"loss.gp_every", GT_BIND(loss.gp_every), at_least(1),
               "Lazy regularization: the gradient penalty on every k-th critic batch only, scaled by k (1 = "
               "every batch)."});
  // progan
  k.push_back({"progan.phase_length", GT_BIND(progan.phase_length), positive_list(true),
               "Length of each resolution's phases, 4x4 up: one number for all or one per resolution. Every "
               "resolution after 4x4 runs a transition (its new block fades in) and then a stable phase of this "
               "length; 4x4 a stable phase only. Counted in progan.phase_unit."});
  k.push_back({"progan.phase_unit", GT_BIND(progan.phase_unit), one_of({"steps", "images"}),
               "What progan.phase_length counts: steps (G updates) or real images (the paper's 600k), rounded up "
               "to whole steps."});
  k.push_back({"progan.batch", GT_BIND(progan.batch), positive_list(true),
               "Global batch per resolution, 4x4 up (one number for all or one per resolution); empty = "
               "train.batch_size. Each is placed by the large-batch plan (train.micro_batch, train.memory_mb)."});
  k.push_back({"progan.lr", GT_BIND(progan.lr), positive_list(false),
               "Learning rate of G and D per resolution, 4x4 up (one for all or one per resolution); empty = "
               "optim.g.lr and optim.d.lr."});
  k.push_back({"progan.reset_optimizer", GT_BIND(progan.reset_optimizer), any_value(),
               "Start every phase with fresh optimizer state (the paper's code); false carries each parameter's "
               "state over and starts the new block's at zero."});
  // ema
  k.push_back({"ema.beta", GT_BIND(ema.beta), unit_fraction(),
               "Keep G_ema, a moving average of G's weights, with this decay per step: G_ema = beta G_ema + (1 - "
               "beta) G (0.999 in the Progressive GAN paper); 0 = off unless ema.half_life_images."});
  k.push_back({"ema.half_life_images", GT_BIND(ema.half_life_images), at_least(0),
               "Instead of ema.beta: the half-life of G_ema in images G has made, beta = 0.5^(batch / half-life) "
               "(10,000 in StyleGAN2); 0 = unused."});
  k.push_back({"ema.rampup", GT_BIND(ema.rampup), at_least(0),
               "With ema.half_life_images: early on the half-life is at most images seen x rampup, so G_ema follows G "
               "closely at first (0.05 in StyleGAN2-ADA); 0 = none."});
  // optim
  add_optimizer_keys(k, "optim.g", &Config::optim_g, "G");
  add_optimizer_keys(k, "optim.d", &Config::optim_d, "D");
  // log
  k.push_back({"log.every_steps", GT_BIND(log.every_steps), at_least(1),
               "Log losses and throughput every this many steps."});
  k.push_back({"log.sample_every_steps", GT_BIND(log.sample_every_steps), at_least(0),
               "Write a grid of generated samples every this many steps; 0 = only at the end."});
  k.push_back({"log.sample_count", GT_BIND(log.sample_count), between(1, 1024),
               "Images in each sample grid (drawn from fixed noise, so grids are comparable)."});
  k.push_back({"log.tensorboard", GT_BIND(log.tensorboard), any_value(),
               "Also write TensorBoard event files (events.out.tfevents.*) in the run directory: the metrics.jsonl "
               "values as scalars and each sample grid as an image (`tensorboard --logdir runs/`)."});
  k.push_back({"log.swd_every_steps", GT_BIND(log.swd_every_steps), at_least(0),
               "Measure the Sliced Wasserstein Distance of G's samples to the real images every this many steps, "
               "before training and at the end (metrics.jsonl `swd`, docs/user-guide.md Evaluate); 0 = off."});
  k.push_back({"log.swd_images", GT_BIND(log.swd_images), between(1, 65536),
               "Images per SWD measurement: this many from G (fixed noise) and as many real ones (a fixed seeded "
               "subset); at most the dataset's size."});
  // checkpoint
  k.push_back({"checkpoint.resume", GT_BIND(checkpoint.resume), non_empty_text(),
               "auto: continue from the newest checkpoint of run.out_dir/run.name that validates (a finished run "
               "exits at once); never: always a new run (in name.1, ... when the directory is taken); or the path "
               "of a checkpoint to continue from."});
  k.push_back({"checkpoint.every_steps", GT_BIND(checkpoint.every_steps), at_least(0),
               "Write a checkpoint every this many steps; 0 = not by steps. One is always written at the end and "
               "on a stop."});
  k.push_back({"checkpoint.every_minutes", GT_BIND(checkpoint.every_minutes), at_least(0),
               "Also write a checkpoint every this many minutes of training (rank 0's clock); 0 = off."});
  k.push_back({"checkpoint.keep_last", GT_BIND(checkpoint.keep_last), at_least(0),
               "Keep the newest this many checkpoints and delete older ones; 0 = keep all."});
  k.push_back({"checkpoint.keep_every_hours", GT_BIND(checkpoint.keep_every_hours), at_least(0),
               "Besides the newest, keep one checkpoint per this many hours of the run; 0 = off."});
  // dist
  k.push_back({"dist.backend", GT_BIND(dist.backend), choices_of<DistBackend>(),
               "Communicator between ranks: auto (mpi when started by mpirun or srun, else local; with run.device "
               "cuda, gradients go over NCCL when every rank has a GPU of its own, else staged through host memory), "
               "mpi, local (one process), nccl (GPU collectives, one rank per GPU: needs run.device cuda, NCCL and a "
               "GPU per rank)."});
  k.push_back({"dist.sync_bn", GT_BIND(dist.sync_bn), any_value(),
               "Batch norm uses the statistics of the global batch (summed over the ranks); false = each rank's "
               "shard alone."});
  k.push_back({"dist.bucket_mb", GT_BIND(dist.bucket_mb), above(0),
               "Gradients are summed over the ranks in buckets of about this many MiB, started while backward "
               "runs."});
  k.push_back({"dist.timeout_s", GT_BIND(dist.timeout_s), at_least(0),
               "A collective that waits longer than this many seconds for the other ranks stops the job with an "
               "error; 0 = wait forever."});
  k.push_back({"dist.reduce_precision", GT_BIND(dist.reduce_precision), choices_of<ReducePrecision>(),
               "The gradient all-reduce's wire format: fp32, or bf16 (half the bytes: each bucket is rounded to "
               "bfloat16, summed in bfloat16 over the ranks and widened back; for runs whose all-reduce is exposed, "
               "docs/performance.md). One rank moves nothing and rounds nothing."});
  return k;
}

#undef GT_BIND

std::vector<std::string> build_sections(const std::vector<KeyDef>& keys) {
  std::vector<std::string> sections;
  for (const KeyDef& key : keys) {
    for (size_t dot = key.path.find('.'); dot != std::string::npos; dot = key.path.find('.', dot + 1)) {
      std::string prefix = key.path.substr(0, dot);
      if (std::find(sections.begin(), sections.end(), prefix) == sections.end()) sections.push_back(prefix);
    }
  }
  return sections;
}

std::string format_number(double v) { return fmt::format("{}", v); }

// Shortest text that reads back to the same float, always with a '.' in the mantissa so that
// YAML 1.1 readers (PyYAML) also see a float: "0.0002", "1.0", "1.0e-08".
template <class F>
std::string format_float(F v) {
  if (std::isnan(v)) return ".nan";
  if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
  std::string s = fmt::format("{}", v);
  size_t exponent = s.find_first_of("eE");
  std::string mantissa = s.substr(0, exponent);
  if (mantissa.find('.') == std::string::npos) s.insert(mantissa.size(), ".0");
  return s;
}

// Plain only when no YAML reader could take the text for anything but this string.
bool safe_as_plain_scalar(const std::string& s) {
  if (s.empty()) return false;
  unsigned char first = static_cast<unsigned char>(s[0]);
  if (!(std::isalpha(first) || first == '_' || first == '/')) return false;
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (!(std::isalnum(c) || c == '_' || c == '.' || c == '/' || c == '-' || c == '+')) return false;
  }
  std::string lower = s;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  static const char* const kSpecialWords[] = {"null", "true", "false", "yes", "no", "on",
                                              "off", "y", "n", "inf", "nan", "infinity"};
  return std::none_of(std::begin(kSpecialWords), std::end(kSpecialWords),
                      [&](const char* w) { return lower == w; });
}

std::string double_quoted(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

// The value as it is compared against a list of choices: the string itself, or the number's text.
std::string choice_text(const FieldRef& field) {
  if (auto s = std::get_if<std::string*>(&field)) return **s;
  if (auto c = std::get_if<ChoiceRef>(&field)) return c->get();
  return format_value(field);
}

std::optional<double> numeric_value(const FieldRef& field) {
  return std::visit(
      [](const auto& p) -> std::optional<double> {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, ChoiceRef> || std::is_same_v<P, std::string*> || std::is_same_v<P, bool*>) {
          return std::nullopt;
        } else {
          return static_cast<double>(*p);
        }
      },
      field);
}

}  // namespace

const std::vector<KeyDef>& schema_table() {
  static const std::vector<KeyDef> table = build_schema();
  return table;
}

const std::vector<std::string>& section_paths() {
  static const std::vector<std::string> sections = build_sections(schema_table());
  return sections;
}

const KeyDef* find_key(std::string_view path) {
  for (const KeyDef& key : schema_table()) {
    if (key.path == path) return &key;
  }
  return nullptr;
}

bool is_section(std::string_view path) {
  const auto& sections = section_paths();
  return std::find(sections.begin(), sections.end(), path) != sections.end();
}

std::string type_name(const FieldRef& field) {
  switch (field.index()) {
    case 0:
    case 1:
      return "int";
    case 2:
    case 3:
      return "float";
    case 4:
      return "bool";
    default:
      return "string";
  }
}

std::string describe_rule(const Rule& rule) {
  if (rule.list != Rule::List::none)
    return fmt::format("a comma-separated list of positive {} (or a YAML list), or empty",
                       rule.list == Rule::List::positive_ints ? "integers" : "numbers");
  if (rule.choices.size() == 1) return rule.choices.front();
  if (!rule.choices.empty()) return "one of " + fmt::format("{}", fmt::join(rule.choices, ", "));
  if (rule.file_name) return "a non-empty name without '/'";
  if (rule.non_empty) return "non-empty";
  if (rule.min && rule.max) {
    return fmt::format("in {}{}, {}{}", rule.min_exclusive ? "(" : "[", format_number(*rule.min),
                       format_number(*rule.max), rule.max_exclusive ? ")" : "]");
  }
  if (rule.min) return fmt::format("{} {}", rule.min_exclusive ? ">" : ">=", format_number(*rule.min));
  if (rule.max) return fmt::format("{} {}", rule.max_exclusive ? "<" : "<=", format_number(*rule.max));
  return "any";
}

std::string format_value(const FieldRef& field) {
  return std::visit(
      [](const auto& p) -> std::string {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, ChoiceRef>) {
          return p.get();  // choice names are plain YAML words
        } else if constexpr (std::is_same_v<P, std::string*>) {
          return safe_as_plain_scalar(*p) ? *p : double_quoted(*p);
        } else if constexpr (std::is_same_v<P, bool*>) {
          return *p ? "true" : "false";
        } else if constexpr (std::is_floating_point_v<std::remove_pointer_t<P>>) {
          return format_float(*p);
        } else {
          return fmt::format("{}", *p);
        }
      },
      field);
}

std::string check_rule(const FieldRef& field, const Rule& rule) {
  const std::string requirement = "must be " + describe_rule(rule);
  if (!rule.choices.empty()) {
    std::string text = choice_text(field);
    bool listed = std::find(rule.choices.begin(), rule.choices.end(), text) != rule.choices.end();
    return listed ? "" : requirement;
  }
  if (auto s = std::get_if<std::string*>(&field)) {
    const std::string& text = **s;
    if (rule.non_empty && text.empty()) return "must not be empty";
    if (rule.file_name && (text.find('/') != std::string::npos || text == "." || text == ".."))
      return "must be a single name without '/' (not '.' or '..')";
    if (rule.list != Rule::List::none && !parse_number_list(text, rule.list == Rule::List::positive_ints))
      return requirement;
    return "";
  }
  std::optional<double> v = numeric_value(field);
  if (!v) return "";
  if (std::isnan(*v)) return "must be a number, not NaN";
  bool too_low = rule.min && (rule.min_exclusive ? *v <= *rule.min : *v < *rule.min);
  bool too_high = rule.max && (rule.max_exclusive ? *v >= *rule.max : *v > *rule.max);
  return (too_low || too_high) ? requirement : "";
}

}  // namespace gt::config_detail

namespace gt {

std::optional<std::vector<double>> parse_number_list(const std::string& text, bool integers) {
  std::vector<double> out;
  size_t begin = 0;
  const std::string space = " \t";
  if (text.find_first_not_of(space) == std::string::npos) return out;
  while (begin <= text.size()) {
    size_t end = text.find(',', begin);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(begin, end - begin);
    const size_t a = item.find_first_not_of(space), b = item.find_last_not_of(space);
    if (a == std::string::npos) return std::nullopt;
    item = item.substr(a, b - a + 1);
    double v = 0;
    if (integers) {
      int64_t i = 0;
      auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), i);
      if (ec != std::errc() || p != item.data() + item.size()) return std::nullopt;
      v = static_cast<double>(i);
    } else {
      auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
      if (ec != std::errc() || p != item.data() + item.size() || !std::isfinite(v)) return std::nullopt;
    }
    if (!(v > 0)) return std::nullopt;
    out.push_back(v);
    begin = end + 1;
  }
  return out;
}

}  // namespace gt
