// The SWD metric during training: real descriptors once, G's descriptors at each measurement, each rank a share of the images and of the directions.
#include "train/swd_meter.h"

#include <algorithm>
#include <span>

#include "core/error.h"
#include "core/rng.h"
#include "data/image_source.h"
#include "parallel/communicator.h"

namespace gt {
namespace {

// Images read or generated at a time: the descriptors are what stays, so the batch only bounds the images in memory.
constexpr int64_t kChunk = 256;

}  // namespace

std::vector<int64_t> swd_real_subset(int64_t dataset_size, int64_t n, uint64_t seed) {
  std::vector<int64_t> order(static_cast<size_t>(dataset_size));
  permutation(order.data(), dataset_size, seed, 0);
  order.resize(static_cast<size_t>(n));
  return order;
}

void check_swd_config(const LogConfig& log, int resolution, int64_t dataset_size) {
  if (log.swd_every_steps <= 0) return;
  if (log.swd_images < 1) user_error("log.swd_images {}: the SWD needs at least 1 image", log.swd_images);
  if (resolution < kSwdMinResolution)
    user_error("log.swd_every_steps {} measures the SWD, which needs images of at least {}x{}; model.resolution is {} "
               "(set log.swd_every_steps 0)",
               log.swd_every_steps, kSwdMinResolution, kSwdMinResolution, resolution);
  swd_check_image_size(resolution, resolution, fmt::format("model.resolution {}", resolution));
  if (log.swd_images > dataset_size)
    user_error("log.swd_images {} is more than the {} images of the data: the SWD compares as many real images as "
               "generated ones",
               log.swd_images, dataset_size);
}

SwdMeter::SwdMeter(const LogConfig& log, uint64_t seed, const ImageSource& source, int resolution, int channels, int nz,
                 Communicator& comm)
    : n_(log.swd_images), resolution_(resolution), channels_(channels), nz_(nz), comm_(comm) {
  options_.seed = seed;
  const std::vector<int64_t> subset = swd_real_subset(source.size(), n_, seed);
  const int64_t per = share(), first = std::min<int64_t>(comm.rank() * per, n_);
  const int64_t count = std::min<int64_t>(per, n_ - first);
  SwdDescriptors mine = swd_descriptor_set(resolution, channels, options_);
  mine.first_image = comm.rank() * per;
  const int64_t values = static_cast<int64_t>(channels) * resolution * resolution;
  std::vector<float> batch;
  for (int64_t done = 0; done < count; done += kChunk) {
    const int64_t k = std::min(kChunk, count - done);
    batch.resize(static_cast<size_t>(k * values));
    source.get_many(std::span<const int64_t>(subset.data() + first + done, static_cast<size_t>(k)), {}, batch.data());
    swd_add_images_f32(mine, batch.data(), k, options_);
  }
  reals_ = std::move(mine);  // gathered by the first measure(): no collective here, so a failed read can be agreed on
}

int64_t SwdMeter::share() const { return (n_ + comm_.world_size() - 1) / comm_.world_size(); }

SwdDescriptors SwdMeter::gather(SwdDescriptors mine) {
  const int64_t per = share();
  const int64_t row_values = static_cast<int64_t>(mine.descriptors_per_image) * mine.dim();
  SwdDescriptors all = swd_descriptor_set(resolution_, channels_, options_);
  all.images = n_;
  std::vector<float> gathered;
  for (int l = 0; l < mine.level_count(); ++l) {
    // Equal shares, the last ones padded with zero rows, so one all-gather collects them in image order.
    mine.levels[l].resize(static_cast<size_t>(per * row_values), 0.f);
    if (comm_.world_size() == 1) {
      gathered = std::move(mine.levels[l]);
    } else {
      gathered.resize(static_cast<size_t>(per * comm_.world_size() * row_values));
      comm_.all_gather(mine.levels[l].data(), gathered.data(), per * row_values);
      std::vector<float>().swap(mine.levels[l]);
    }
    gathered.resize(static_cast<size_t>(n_ * row_values));
    all.levels[l] = std::move(gathered);
    gathered = {};
  }
  return all;
}

SwdResult SwdMeter::measure(const std::function<Tensor(const Tensor&)>& generate) {
  if (!reals_gathered_) {
    reals_ = gather(std::move(reals_));
    swd_normalize(reals_);
    reals_gathered_ = true;
  }
  const int64_t per = share(), first = std::min<int64_t>(comm_.rank() * per, n_);
  const int64_t count = std::min<int64_t>(per, n_ - first);
  SwdDescriptors mine = swd_descriptor_set(resolution_, channels_, options_);
  mine.first_image = comm_.rank() * per;
  for (int64_t done = 0; done < count; done += kChunk) {
    const int64_t k = std::min(kChunk, count - done);
    Tensor z({k, nz_});
    fill_noise(z.f32(), k, nz_, options_.seed, kSwdNoiseStep, first + done);
    const Tensor images = generate(z);
    GT_CHECK(images.numel() == k * channels_ * resolution_ * resolution_, "swd: G made {} values for {} images",
             images.numel(), k);
    swd_add_images_f32(mine, images.f32(), k, options_);
  }
  SwdDescriptors fakes = gather(std::move(mine));
  swd_normalize(fakes);
  // Every rank holds both sets; each projects and sorts a share of the directions (whole blocks, so a
  // direction's mean is the same bits on any number of ranks), and the means are gathered in direction
  // order, so every rank sums the same list in the same order.
  const int P = comm_.world_size(), blocks = swd_direction_blocks(options_);
  const int blocks_per_rank = (blocks + P - 1) / P;
  const int directions = options_.dir_repeats * options_.dirs_per_repeat;
  const std::vector<std::vector<double>> mine_means = swd_direction_means(
      reals_, fakes, options_, std::min(comm_.rank() * blocks_per_rank, blocks), blocks_per_rank);
  std::vector<std::vector<double>> means(mine_means.size());
  const int64_t slot = static_cast<int64_t>(blocks_per_rank) * kSwdDirectionBlock;
  for (size_t l = 0; l < mine_means.size(); ++l) {
    std::vector<double> padded(mine_means[l]);
    padded.resize(static_cast<size_t>(slot), 0.0);
    std::vector<double>& all = means[l];
    all.resize(static_cast<size_t>(slot * P));
    if (P == 1)
      all = padded;
    else
      comm_.all_gather(padded.data(), all.data(), slot);
    all.resize(static_cast<size_t>(directions));
  }
  return swd_from_direction_means(reals_, means);
}

}  // namespace gt
