// Counter-based random numbers: Philox4x32-10, and draws keyed by (seed, stream, counter) so results never depend on rank or thread.
#pragma once
#include <cstdint>

#include "core/hd.h"

namespace gt {

// What a draw is for; part of the key, so different uses never share random numbers.
enum class RngStream : uint32_t {
  init = 1,
  noise = 2,
  permutation = 3,
  flip = 4,
  synthetic = 5,
  eval_patches = 6,     // eval/swd: where the 7x7 patches of each image and pyramid level lie
  eval_directions = 7,  // eval/swd: the random projection directions
  penalty_mix = 8,      // WGAN-GP: the interpolation weight e of each sample
  test = 99
};

struct Philox4 {
  uint32_t v[4];
};

// Philox4x32 with 10 rounds (Salmon et al., SC'11), same bits on host and device.
GT_HD Philox4 philox4x32_10(Philox4 ctr, uint32_t k0, uint32_t k1);

// Maps 32 random bits to a float uniform in (0, 1] (never 0, so log() is safe).
GT_HD float uniform_open0(uint32_t bits);

// The key of a draw: the seed's two halves mixed with the stream id.
GT_HD void rng_key(uint64_t seed, RngStream stream, uint32_t* k0, uint32_t* k1);

// out[i] = mean + std * N(0,1) draw number (offset + i) of (seed, stream); i.e. element i depends on
// (seed, stream, offset + i) only. Box-Muller on Philox outputs.
void fill_normal(float* out, int64_t n, float mean, float std, uint64_t seed, RngStream stream, uint64_t offset);
// Uniform in [lo, hi), same keying.
void fill_uniform(float* out, int64_t n, float lo, float hi, uint64_t seed, RngStream stream, uint64_t offset);

// The generator's input noise for samples [first_index, first_index + count) of a global batch at a
// given step: z[count, nz], standard normal, keyed by (seed, step, global sample index) only, so any
// split of the batch over ranks draws the same vectors.
void fill_noise(float* z, int64_t count, int nz, uint64_t seed, uint64_t step, int64_t first_index);

// WGAN-GP's interpolation weights e for samples [first_index, first_index + count) of critic batch `batch`:
// uniform in [0, 1), keyed by (seed, batch, global sample index) only (penalty_mix_value), so any split of
// the batch over ranks, and the CPU and the GPU, draw the same e.
void fill_penalty_mix(float* e, int64_t count, uint64_t seed, uint64_t batch, int64_t first_index);

// A random permutation of [0, n) keyed by (seed, epoch): the epoch's sample order.
void permutation(int64_t* out, int64_t n, uint64_t seed, uint64_t epoch);

}  // namespace gt

#include "core/rng_inl.h"
