// Implementations of train, sample, info and ingest.
#include "cli/commands.h"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "config/config.h"
#include "core/file_check.h"
#include "core/rng.h"
#include "data/dataset_h5.h"
#include "data/ingest.h"
#include "parallel/agreement.h"
#include "parallel/launch.h"
#include "io/checkpoint.h"
#include "io/h5_tensors.h"
#include "io/image.h"
#include "nn/dcgan.h"
#include "train/cpu_step.h"
#include "train/large_batch.h"
#include "train/model_state.h"
#include "train/progressive.h"
#include "train/run_setup.h"
#include "train/trainer.h"

namespace gt {

namespace {

std::string with_commas(int64_t n) {
  const std::string digits = std::to_string(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0 && digits[i - 1] != '-') out += ',';
    out += digits[i];
  }
  return out;
}

void print_model(const char* title, Sequential& net, const Shape& input) {
  fmt::print("{}: input {}\n", title, shape_str(input));
  Shape s = input;
  for (size_t i = 0; i < net.size(); ++i) {
    Layer& l = net.layer(i);
    s = l.output_shape(s);
    int64_t n = 0;
    for (Param* p : l.params()) n += p->value.numel();
    fmt::print("  main.{:<3} {:<16} -> {:<20} {:>12}\n", i, l.kind(), shape_str(s), n ? with_commas(n) : "");
  }
}

std::string optimizer_summary(const OptimConfig& o) {
  std::string text = fmt::format("{} lr {}", choice_name(o.kind), o.lr);
  if (o.kind == OptimizerKind::adam) text += fmt::format(" betas ({}, {})", o.beta1, o.beta2);
  if (o.kind != OptimizerKind::adam && o.momentum != 0) text += fmt::format(" momentum {}", o.momentum);
  if (o.weight_decay != 0) text += fmt::format(" weight_decay {}", o.weight_decay);
  return text;
}

std::string lower_ext(const std::string& path) {
  std::string e = std::filesystem::path(path).extension().string();
  for (auto& ch : e) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return e;
}

}  // namespace

Config checkpoint_config(const Checkpoint& ck, const std::string& path) {
  try {
    return parse_config(ck.meta.config_yaml, path + ":/meta/config");
  } catch (const UserError& e) {
    user_error("checkpoint {} holds a config that does not parse: {}", path, e.what());
  }
}

void refuse_nonfinite(const Checkpoint& ck, const std::string& path, const char* refusal) {
  const std::string bad = first_nonfinite_tensor(ck);
  if (!bad.empty()) user_error("checkpoint {} holds non-finite weights (/{}); {}", path, bad, refusal);
}

int cmd_train(const TrainArgs& a) {
  // Started by mpirun or srun, every rank reads the config; a problem is agreed and reported once.
  std::unique_ptr<Communicator> comm = open_communicator(DistBackend::automatic, DistConfig{}.timeout_s);
  Config cfg;
  run_agreed(*comm, [&] { cfg = load_config(a.config, a.overrides); });
  // Then the config's dist.backend decides the host communicator (parallel/launch.h).
  std::unique_ptr<Communicator> other;
  run_agreed(*comm, [&] { other = replacement_communicator(*comm, cfg.dist.backend, cfg.dist.timeout_s); });
  if (other) comm = std::move(other);
  const TrainSummary s = train(cfg, *comm);
  return s.stopped_by_signal || s.stopped_by_time ? kExitStoppedBySignal : 0;
}

std::string probe_hdf5_kind(const std::string& path) {
  // A file HDF5 cannot open is read as a checkpoint, whose reader names truncation and foreign files;
  // a damaged dataset may fail even the lookup of /images: read as a dataset, whose reader names the damage.
  if (h5_file_lookup(path, "/meta") == 1) return "checkpoint";
  const int images = h5_file_lookup(path, "/images");
  return images == 1 || images == -1 ? "dataset" : "checkpoint";
}

// `gantrain info --config` of a Progressive GAN: the model, then every phase's resolution, steps, batch, the
// large-batch plan's micro-batches (on one rank: more ranks split the batch first) and parameter counts.
int info_progan(const Config& cfg) {
  const ProganSpec spec = progan_spec(cfg.model);
  const ProganSchedule schedule = progan_schedule(cfg);
  const GanObjective objective = gan_objective(cfg);
  fmt::print("model: progan {}x{}x{} | nz {} | feature maps min({} / r, {}) | minibatch stddev groups of {}\n",
             spec.channels, spec.resolution, spec.resolution, spec.nz, spec.fmap_base, spec.fmap_max, spec.mbstd_group);
  fmt::print("{} phases, {} steps, {} real images ({} per phase unit: {})\n", schedule.phases.size(),
             with_commas(schedule.total_steps()), with_commas(schedule.images_before(schedule.total_steps())),
             cfg.progan.phase_length, cfg.progan.phase_unit);
  fmt::print("{:>5}  {:<18} {:>8} {:>12} {:>6} {:>18}  {:>12} {:>12}  {}\n", "phase", "resolution", "steps",
             "first step", "batch", "micro-batches", "G params", "D params", "lr G / D");
  const double budget = cfg.train.memory_mb * 1048576.0;
  for (const ProganPhase& p : schedule.phases) {
    Sequential G = make_progan_generator(spec, p.resolution, p.fading);
    Sequential D = make_progan_discriminator(spec, p.resolution, p.fading);
    const double per_image = step_bytes_per_image(G, D, spec.nz, objective);
    const LargeBatchPlan plan =
        plan_large_batch(p.batch, 1, cfg.train.micro_batch, budget, per_image,
                         fmt::format("train.memory_mb {}", cfg.train.memory_mb), spec.mbstd_group);
    fmt::print("{:>5}  {:<18} {:>8} {:>12} {:>6} {:>18}  {:>12} {:>12}  {:.4g} / {:.4g}\n", p.index, p.name(),
               with_commas(p.steps), with_commas(p.first_step), p.batch,
               fmt::format("{} x {}", plan.accumulation, plan.micro_batch), with_commas(G.param_count()),
               with_commas(D.param_count()), p.lr_g, p.lr_d);
  }
  fmt::print("micro-batches on one rank (\"accumulated x images\"{}); with more ranks each takes batch / ranks first\n",
             budget > 0 ? fmt::format(", within train.memory_mb {}", cfg.train.memory_mb) : ", no memory budget");
  fmt::print("{}\n", describe_objective(cfg));
  return 0;
}

int cmd_info(const InfoArgs& a) {
  if (a.config.empty() == a.file.empty()) user_error("info takes either --config FILE or a checkpoint/dataset FILE");
  if (!a.config.empty()) {
    const Config cfg = load_config(a.config);
    if (cfg.model.arch == "progan") return info_progan(cfg);
    const DcganSpec spec = dcgan_spec(cfg.model);
    Sequential G = make_dcgan_generator(spec);
    Sequential D = make_dcgan_discriminator(spec);
    print_model("G", G, {1, spec.nz, 1, 1});
    print_model("D", D, {1, spec.channels, spec.resolution, spec.resolution});
    fmt::print("G = {} parameters\nD = {} parameters\n", with_commas(G.param_count()), with_commas(D.param_count()));
    fmt::print("{}\n", describe_objective(cfg));
    return 0;
  }
  // Telling a dataset from an older checkpoint takes HDF5, which parses a file that nothing vouches for
  // in a separate process (core/file_check.h); a checkpoint with a digest block says what it is.
  const bool dataset = !looks_like_sealed_checkpoint(a.file) &&
                       check_file_or_refuse("hdf5_kind", a.file, &probe_hdf5_kind, "file " + a.file) == "dataset";
  if (dataset) {
    const DatasetReader ds = DatasetReader::open_checked(a.file);
    const DatasetInfo& i = ds.info();
    fmt::print("dataset {}\n  {} images {}x{}x{} uint8 | labels: {} | {} per chunk | format_version {}\n", a.file,
               with_commas(i.count), i.height, i.width, i.channels, i.has_labels ? "yes" : "no", i.samples_per_chunk,
               i.format_version);
    if (!i.source.empty()) fmt::print("  source: {}\n", i.source);
    if (!i.created_by.empty()) fmt::print("  created by: {}\n", i.created_by);
    return 0;
  }
  // Validates as train and sample would: every checksum (load_checkpoint), the config, finite weights.
  const Checkpoint ck = load_checkpoint(a.file);
  const Config cfg = checkpoint_config(ck, a.file);
  const ModelConfig& m = cfg.model;
  fmt::print("checkpoint {}\n  format_version {} | step {} | epoch {} | images_seen {} | world_size {} | seed {} | code {}\n",
             a.file, ck.meta.format_version, ck.meta.step, ck.meta.epoch, ck.meta.images_seen, ck.meta.world_size,
             ck.meta.seed, ck.meta.code_version);
  fmt::print("  model {} {}x{}x{} | nz {} | widths G {} D {} | batch {}\n", m.arch, m.resolution, m.resolution,
             m.channels, m.nz, m.g_width, m.d_width, cfg.train.batch_size);
  fmt::print("  optim G {} | D {}\n", optimizer_summary(cfg.optim_g), optimizer_summary(cfg.optim_d));
  if (m.arch == "progan") {
    auto get = [&ck](const char* key) {
      auto it = ck.meta.ints.find(key);
      return it == ck.meta.ints.end() ? int64_t{-1} : it->second;
    };
    fmt::print("  progan phase {}: {}x{} {} | alpha {:.4f} | {} images into the fade-in | final {}x{}\n", get("phase"),
               ck.meta.resolution, ck.meta.resolution, get("fading") == 1 ? "transition" : "stable", ck.meta.alpha,
               get("fade_images"), m.resolution, m.resolution);
  }
  for (const auto& [group, tensors] : ck.groups) {
    int64_t n = 0;
    for (const auto& [name, t] : tensors) n += t.numel();
    fmt::print("  /{:<22} {:>4} tensors {:>14} values\n", group, tensors.size(), with_commas(n));
  }
  if (!first_nonfinite_tensor(ck).empty()) {
    fmt::print("verdict: refused\n");
    std::fflush(stdout);
    refuse_nonfinite(ck, a.file, "refusing it as a start for train or sample");
  }
  fmt::print("verdict: ok\n");
  return 0;
}

std::string generator_group(const Checkpoint& ck, const std::string& path, bool ema, bool no_ema, bool prefer_g) {
  if (ema && no_ema) user_error("--ema and --no-ema together: choose one generator");
  const bool has_ema = ck.groups.find("G_ema/params") != ck.groups.end();
  if (ema && !has_ema) user_error("{} has no averaged generator (/G_ema); leave out --ema", path);
  return ema || (has_ema && !no_ema && !prefer_g) ? "G_ema/params" : "G/params";
}

int cmd_sample(const SampleArgs& a) {
  const std::string ext = lower_ext(a.out);
  if (ext != ".png" && ext != ".h5") user_error("--out {}: expected a .png or .h5 file name", a.out);
  const Checkpoint ck = load_checkpoint(a.checkpoint);
  const Config cfg = checkpoint_config(ck, a.checkpoint);
  refuse_nonfinite(ck, a.checkpoint, "refusing to sample");
  const std::string group = generator_group(ck, a.checkpoint, a.ema, a.no_ema, false);
  Sequential G = make_checkpoint_generator(cfg, ck.meta);
  import_state_dict(G, ck, group, a.checkpoint);
  const int nz = cfg.model.nz;
  Tensor z({a.n, nz});
  fill_noise(z.f32(), a.n, nz, static_cast<uint64_t>(a.seed), 0, 0);
  // A Progressive GAN checkpoint of an earlier phase: its images upsampled to the final resolution.
  Tensor images = upsample_to(generate(G, z), cfg.model.resolution);
  if (ext == ".png") {
    write_grid_png(a.out, images, std::max(1, static_cast<int>(std::lround(std::sqrt(a.n)))));
  } else {
    save_tensors_h5(a.out, {{"z", z}, {"images", images}});
  }
  fmt::print("wrote {} samples of {} from {} (step {}) to {}\n", a.n, group == "G_ema/params" ? "G_ema" : "G",
             a.checkpoint, ck.meta.step, a.out);
  return 0;
}

int cmd_ingest(const IngestArgs& a) {
  IngestOptions options;
  options.from = a.from;
  options.out = a.out;
  options.size = a.size;
  options.channels = a.channels;
  options.crop = a.crop;
  options.threads = a.threads;
  const IngestReport report = ingest(options);
  fmt::print("{}", format_report(report));
  return 0;
}

}  // namespace gt
