// gantrain eval: the Sliced Wasserstein Distance of G's samples, or of a second dataset, against a seeded random subset of a dataset.
#include <algorithm>
#include <filesystem>
#include <memory>
#include <vector>

#include "cli/commands.h"
#include "config/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "data/dataset_h5.h"
#include "eval/swd.h"
#include "io/checkpoint.h"
#include "nn/dcgan.h"
#include "train/cpu_step.h"
#include "train/model_state.h"
#include "train/swd_meter.h"
#include "train/progressive.h"
#include "train/run_setup.h"
#include "train/trainer.h"

namespace gt {
namespace {

// Images read or generated at a time: the descriptors are what stays, so the batch only bounds the images in memory.
constexpr int64_t kEvalBatch = 256;

std::string size_text(int height, int width, int channels) { return fmt::format("{}x{}x{}", height, width, channels); }

// Adds images `indices` of a dataset to the set, in that order, a batch at a time.
void add_dataset_images(SwdDescriptors& set, const DatasetReader& ds, const std::vector<int64_t>& indices,
                        const SwdOptions& options) {
  std::vector<uint8_t> batch;
  for (size_t first = 0; first < indices.size(); first += kEvalBatch) {
    const size_t count = std::min<size_t>(kEvalBatch, indices.size() - first);
    batch.resize(count * ds.info().sample_bytes());
    ds.read_images(std::span<const int64_t>(indices.data() + first, count), batch.data());
    swd_add_images_u8(set, batch.data(), static_cast<int64_t>(count), options);
  }
}

// The first n positions (from `skip` on) of the dataset's permutation keyed by (seed, epoch 0): a seeded random subset.
std::vector<int64_t> random_subset(int64_t size, int64_t n, int64_t skip, uint64_t seed) {
  std::vector<int64_t> order(static_cast<size_t>(size));
  permutation(order.data(), size, seed, 0);
  return std::vector<int64_t>(order.begin() + skip, order.begin() + skip + n);
}

}  // namespace

int cmd_eval(const EvalArgs& a) {
  if (a.metric != "swd") user_error("--metric {}: unknown metric (the one there is: swd)", a.metric);
  if (a.checkpoint.empty() == a.data2.empty())
    user_error("eval compares --data with either --checkpoint (G's samples) or --data2 (another dataset's images): "
               "give exactly one of them");
  if (a.n < 1) user_error("--n {}: the number of images must be at least 1", a.n);
  if (a.train_noise && a.checkpoint.empty())
    user_error("--train-noise draws G's noise as training's SWD does; it needs --checkpoint");
  const uint64_t seed = static_cast<uint64_t>(a.seed);
  SwdOptions options;
  options.seed = seed;

  const DatasetReader real = DatasetReader::open_checked(a.data);
  const DatasetInfo& ri = real.info();
  swd_check_image_size(ri.height, ri.width, "dataset " + a.data);
  // The images must fit each other before their number is checked: a mismatch is the deeper problem.
  auto check_count = [&] {
    if (a.n > ri.count) user_error("--n {} is more than the {} images of dataset {}", a.n, ri.count, a.data);
  };

  SwdDescriptors reals = swd_descriptor_set(ri.height, ri.channels, options);
  SwdDescriptors others = swd_descriptor_set(ri.height, ri.channels, options);
  std::string other_text;

  if (!a.data2.empty()) {
    std::error_code ec;
    const bool same_file = std::filesystem::equivalent(a.data, a.data2, ec);
    if (same_file) {
      check_count();
      // Two disjoint random halves of one dataset: positions [0, n) and [n, 2n) of the same permutation.
      if (2 * a.n > ri.count)
        user_error("--data2 is the same file as --data, so its two disjoint sets of --n {} images need {} images; "
                   "dataset {} has {}",
                   a.n, 2 * a.n, a.data, ri.count);
      add_dataset_images(reals, real, random_subset(ri.count, a.n, 0, seed), options);
      add_dataset_images(others, real, random_subset(ri.count, a.n, a.n, seed), options);
      other_text = fmt::format("{} other images of {} (disjoint)", a.n, a.data);
    } else {
      const DatasetReader other = DatasetReader::open_checked(a.data2);
      const DatasetInfo& oi = other.info();
      if (oi.height != ri.height || oi.width != ri.width || oi.channels != ri.channels)
        user_error("dataset {} holds {} images but dataset {} holds {}; SWD compares images of the same size and channels",
                   a.data2, size_text(oi.height, oi.width, oi.channels), a.data,
                   size_text(ri.height, ri.width, ri.channels));
      if (a.n > oi.count) user_error("--n {} is more than the {} images of dataset {}", a.n, oi.count, a.data2);
      check_count();
      add_dataset_images(reals, real, random_subset(ri.count, a.n, 0, seed), options);
      add_dataset_images(others, other, random_subset(oi.count, a.n, 0, seed), options);
      other_text = fmt::format("{} images of {}", a.n, a.data2);
    }
  } else {
    const Checkpoint ck = load_checkpoint(a.checkpoint);
    const Config cfg = checkpoint_config(ck, a.checkpoint);
    refuse_nonfinite(ck, a.checkpoint, "refusing to evaluate it");
    // The images G makes at the model's (final) resolution: a Progressive GAN checkpoint of an earlier phase
    // has its samples upsampled to it.
    const int resolution = cfg.model.resolution, channels = cfg.model.channels, nz = cfg.model.nz;
    if (resolution != ri.height || channels != ri.channels)
      user_error("checkpoint {} makes {} images but dataset {} holds {}; SWD compares images of the same size and "
                 "channels",
                 a.checkpoint, size_text(resolution, resolution, channels), a.data,
                 size_text(ri.height, ri.width, ri.channels));
    const std::string group = generator_group(ck, a.checkpoint, a.ema, a.no_ema, a.train_noise);
    const bool ema = group == "G_ema/params";
    check_count();
    Sequential G = make_checkpoint_generator(cfg, ck.meta);
    import_state_dict(G, ck, group, a.checkpoint);
    add_dataset_images(reals, real, random_subset(ri.count, a.n, 0, seed), options);
    // The noise of sample --seed S: image i is G(z_i) with z keyed by (seed, step 0, i), in eval mode; with
    // --train-noise the noise training's SWD draws (seed, kSwdNoiseStep, i), whose real subset is this one.
    const uint64_t noise_step = a.train_noise ? kSwdNoiseStep : 0;
    for (int64_t first = 0; first < a.n; first += kEvalBatch) {
      const int64_t count = std::min(kEvalBatch, a.n - first);
      Tensor z({count, nz});
      fill_noise(z.f32(), count, nz, seed, noise_step, first);
      const Tensor images = upsample_to(generate(G, z), resolution);
      swd_add_images_f32(others, images.f32(), count, options);
    }
    other_text = fmt::format("{} samples of {} (step {}{}{})", a.n, a.checkpoint, ck.meta.step, ema ? ", G_ema" : "",
                             a.train_noise ? ", training's SWD noise" : "");
  }

  swd_normalize(reals);
  swd_normalize(others);
  const SwdResult r = swd_distance(reals, others, options);
  fmt::print("swd: {} vs {} images of {} (seed {}); {} 7x7 patches per image and level, {} directions\n", other_text,
             a.n, a.data, a.seed, options.descriptors_per_image, options.dir_repeats * options.dirs_per_repeat);
  for (size_t l = 0; l < r.per_level.size(); ++l)
    fmt::print("SWDx1e3_{:<4} {:.4f}\n", r.resolutions[l], r.per_level[l] * 1e3);
  fmt::print("SWDx1e3_avg  {:.4f}\n", r.average * 1e3);
  return 0;
}

}  // namespace gt
