// Host fills from the Philox draws specified in core/rng_inl.h: normal, uniform, generator noise, epoch permutations.
#include "core/rng.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "core/error.h"

namespace gt {
namespace {

// Below this many blocks a fill runs on one thread; OpenMP start-up costs more than it saves.
[[maybe_unused]] constexpr int64_t kParallelBlocks = 1 << 14;

// Calls emit(j, block) for every Philox block that covers draws [offset, offset + n), where j is
// the index in out of the block's lane 0 (possibly negative for the first, partial block).
template <class Emit>
void for_each_flat_block(int64_t n, uint64_t seed, RngStream stream, uint64_t offset, Emit emit) {
  if (n <= 0) return;
  uint32_t k0, k1;
  rng_key(seed, stream, &k0, &k1);
  const uint64_t first_block = offset / 4;
  const uint64_t last_block = (offset + static_cast<uint64_t>(n) - 1) / 4;
  const int64_t blocks = static_cast<int64_t>(last_block - first_block) + 1;
#pragma omp parallel for schedule(static) if (blocks > kParallelBlocks)
  for (int64_t b = 0; b < blocks; ++b) {
    const uint64_t block = first_block + static_cast<uint64_t>(b);
    const Philox4 w = philox4x32_10(flat_counter(block), k0, k1);
    const int64_t lane0_index = static_cast<int64_t>(block * 4 - offset);
    emit(lane0_index, w);
  }
}

// Successive 32-bit words of one keyed Philox sequence: word d is word d % 4 of block d / 4.
class PhiloxWords {
 public:
  PhiloxWords(uint32_t k0, uint32_t k1, uint32_t tag_lo, uint32_t tag_hi)
      : k0_(k0), k1_(k1), tag_lo_(tag_lo), tag_hi_(tag_hi) {}

  uint32_t next() {
    if (lane_ == 4) {
      block_words_ = philox4x32_10(
          Philox4{{static_cast<uint32_t>(block_), static_cast<uint32_t>(block_ >> 32), tag_lo_, tag_hi_}}, k0_, k1_);
      ++block_;
      lane_ = 0;
    }
    return block_words_.v[lane_++];
  }

  // Unbiased integer in [0, range), range >= 1 (Lemire, "Fast random integer generation in an
  // interval", 2019): multiply-shift, rejecting the few low products that would bias it.
  uint32_t below(uint32_t range) {
    uint64_t product = static_cast<uint64_t>(next()) * range;
    uint32_t low = static_cast<uint32_t>(product);
    if (low < range) {
      const uint32_t threshold = (0u - range) % range;  // 2^32 mod range
      while (low < threshold) {
        product = static_cast<uint64_t>(next()) * range;
        low = static_cast<uint32_t>(product);
      }
    }
    return static_cast<uint32_t>(product >> 32);
  }

 private:
  uint32_t k0_, k1_, tag_lo_, tag_hi_;
  uint64_t block_ = 0;
  Philox4 block_words_{};
  int lane_ = 4;
};

}  // namespace

void fill_normal(float* out, int64_t n, float mean, float std, uint64_t seed, RngStream stream, uint64_t offset) {
  for_each_flat_block(n, seed, stream, offset, [&](int64_t lane0_index, const Philox4& w) {
    float z[4];
    normals_of_block(w, z);
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = lane0_index + lane;
      if (i >= 0 && i < n) out[i] = fmaf(std, z[lane], mean);
    }
  });
}

void fill_uniform(float* out, int64_t n, float lo, float hi, uint64_t seed, RngStream stream, uint64_t offset) {
  GT_CHECK(lo <= hi, "fill_uniform needs lo <= hi, got [{}, {})", lo, hi);
  const float width = hi - lo;
  // Rounding can carry lo + width * u up to hi; the interval is half-open, so those take the float below.
  const float largest = lo < hi ? std::nextafter(hi, lo) : lo;
  for_each_flat_block(n, seed, stream, offset, [&](int64_t lane0_index, const Philox4& w) {
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = lane0_index + lane;
      if (i >= 0 && i < n) out[i] = std::min(fmaf(width, uniform_closed0(w.v[lane]), lo), largest);
    }
  });
}

void fill_noise(float* z, int64_t count, int nz, uint64_t seed, uint64_t step, int64_t first_index) {
  GT_CHECK(count >= 0 && nz >= 0 && first_index >= 0, "fill_noise: bad count {}, nz {}, first index {}", count,
           nz, first_index);
  GT_CHECK(first_index + count <= int64_t{1} << 32, "fill_noise: sample index {} does not fit in 32 bits",
           first_index + count - 1);
  uint32_t k0, k1;
  rng_key(seed, RngStream::noise, &k0, &k1);
  const int blocks_per_sample = (nz + 3) / 4;
#pragma omp parallel for schedule(static) if (count * blocks_per_sample > kParallelBlocks)
  for (int64_t r = 0; r < count; ++r) {
    const auto sample = static_cast<uint32_t>(first_index + r);
    float* row = z + r * nz;
    for (int b = 0; b < blocks_per_sample; ++b) {
      float normals[4];
      normals_of_block(philox4x32_10(noise_counter(static_cast<uint32_t>(b), sample, step), k0, k1), normals);
      for (int lane = 0; lane < 4 && b * 4 + lane < nz; ++lane) row[b * 4 + lane] = normals[lane];
    }
  }
}

void fill_penalty_mix(float* e, int64_t count, uint64_t seed, uint64_t batch, int64_t first_index) {
  GT_CHECK(count >= 0 && first_index >= 0 && first_index + count <= int64_t{1} << 32,
           "fill_penalty_mix: bad count {} from index {}", count, first_index);
  uint32_t k0, k1;
  rng_key(seed, RngStream::penalty_mix, &k0, &k1);
  for (int64_t r = 0; r < count; ++r) e[r] = penalty_mix_value(k0, k1, static_cast<uint32_t>(first_index + r), batch);
}

void permutation(int64_t* out, int64_t n, uint64_t seed, uint64_t epoch) {
  GT_CHECK(n >= 0 && n <= std::numeric_limits<uint32_t>::max(), "permutation of {} elements is out of range", n);
  for (int64_t i = 0; i < n; ++i) out[i] = i;
  uint32_t k0, k1;
  rng_key(seed, RngStream::permutation, &k0, &k1);
  PhiloxWords words(k0, k1, static_cast<uint32_t>(epoch), static_cast<uint32_t>(epoch >> 32));
  // Fisher-Yates from the top: position i takes a uniform pick among the i + 1 not yet placed.
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = words.below(static_cast<uint32_t>(i + 1));
    std::swap(out[i], out[j]);
  }
}

}  // namespace gt
