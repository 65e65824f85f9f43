// The SWD meter of a training run (log.swd_every_steps): G's samples of fixed noise against a fixed seeded subset of the real images, measured in shares over the ranks.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "config/config.h"
#include "core/tensor.h"
#include "eval/swd.h"

namespace gt {

class Communicator;
class ImageSource;

// The noise of the measured samples: image i is G(z_i) with z_i = fill_noise(run.seed, kSwdNoiseStep, i), a
// step number no training step reaches and not the sample grids' (~0). `gantrain eval --train-noise` draws it too.
inline constexpr uint64_t kSwdNoiseStep = ~0ull - 1;

// The real images measured: positions [0, n) of the dataset's permutation keyed by (seed, epoch 0), the
// subset `gantrain eval --seed SEED --n n` takes.
std::vector<int64_t> swd_real_subset(int64_t dataset_size, int64_t n, uint64_t seed);

// UserError when log.swd_every_steps is on and the run cannot be measured: images below 16x16 (or a side
// the pyramid cannot halve), or log.swd_images above the dataset's size.
void check_swd_config(const LogConfig& log, int resolution, int64_t dataset_size);

class SwdMeter {
 public:
  // Every rank: the descriptors of its share of the real subset (read once, here; no collective, so a
  // read error can go through run_agreed). Call before a loader reads `source` on its threads.
  SwdMeter(const LogConfig& log, uint64_t seed, const ImageSource& source, int resolution, int channels, int nz,
          Communicator& comm);

  // Every rank: generates its share of the images with `generate` (eval mode, as the sample grids) and
  // computes their descriptors (the first call gathers the real ones too); all ranks gather them in
  // image order, each projects and sorts a share of the directions (eval/swd.h: whole blocks), and the
  // directions' means are gathered, so every rank returns the same distance. Patch positions depend on
  // (seed, level, image index) alone and a direction's mean on its block alone, so the result does not
  // depend on the number of ranks. Memory: every rank holds both sets' descriptors (n x 128 x 49 x C
  // floats per level each).
  SwdResult measure(const std::function<Tensor(const Tensor&)>& generate);

  int64_t images() const { return n_; }

 private:
  // This rank's part [first, first + count) of n images in equal shares of ceil(n / P).
  int64_t share() const;
  // The rows of every rank's share, in rank order, cut to the n images, on every rank.
  SwdDescriptors gather(SwdDescriptors mine);

  SwdOptions options_;
  int64_t n_;
  int resolution_, channels_, nz_;
  Communicator& comm_;
  SwdDescriptors reals_;  // this rank's share until the first measure(); then all of them, normalized
  bool reals_gathered_ = false;
};

}  // namespace gt
