// Tests of the Sliced Wasserstein Distance (eval/swd.h): the pyramid, the descriptors, and the distance against a naive double computation.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "config/config.h"
#include "core/rng.h"
#include "data/image_source.h"
#include "eval/swd.h"
#include "io/image.h"

namespace gt {
namespace {

std::vector<float> random_plane(int size, uint64_t seed) {
  std::vector<float> p(static_cast<size_t>(size) * size);
  fill_uniform(p.data(), static_cast<int64_t>(p.size()), 0.f, 255.f, seed, RngStream::test, 0);
  return p;
}

// The 5x5 Gaussian [1,4,6,4,1]^T [1,4,6,4,1] / 256 as one 2-D convolution in double, mirrored borders.
double blur_at(const std::vector<double>& in, int size, int y, int x, double gain) {
  const double k[5] = {1, 4, 6, 4, 1};
  auto mirror = [size](int i) { return i < 0 ? -i : (i >= size ? 2 * (size - 1) - i : i); };
  double s = 0;
  for (int dy = -2; dy <= 2; ++dy)
    for (int dx = -2; dx <= 2; ++dx) s += k[dy + 2] * k[dx + 2] / 256.0 * gain * in[mirror(y + dy) * size + mirror(x + dx)];
  return s;
}

TEST(SwdPyramid, DownAndUpMatchA2DConvolution) {
  const int size = 16;
  const std::vector<float> plane = random_plane(size, 1);
  const std::vector<double> in(plane.begin(), plane.end());
  std::vector<float> down(size / 2 * size / 2);
  swd_pyr_down(plane.data(), size, down.data());
  for (int y = 0; y < size / 2; ++y)
    for (int x = 0; x < size / 2; ++x) EXPECT_NEAR(down[y * size / 2 + x], blur_at(in, size, 2 * y, 2 * x, 1.0), 1e-3);
  std::vector<float> up(4 * size * size);
  swd_pyr_up(plane.data(), size, up.data());
  std::vector<double> spread(4 * size * size, 0.0);
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) spread[2 * y * 2 * size + 2 * x] = in[y * size + x];
  for (int y = 0; y < 2 * size; ++y)
    for (int x = 0; x < 2 * size; ++x) EXPECT_NEAR(up[y * 2 * size + x], blur_at(spread, 2 * size, y, x, 4.0), 1e-3);
}

TEST(SwdPyramid, ConstantImageHasOnlyTheCoarsestLevel) {
  const int size = 64;
  const std::vector<float> plane(size * size, 100.f);
  const auto levels = swd_laplacian_pyramid(plane.data(), size, swd_level_count(size));
  ASSERT_EQ(levels.size(), 3u);
  for (size_t l = 0; l + 1 < levels.size(); ++l)
    for (float v : levels[l]) ASSERT_NEAR(v, 0.f, 1e-4) << "level " << l;
  ASSERT_EQ(levels.back().size(), 16u * 16u);
  for (float v : levels.back()) ASSERT_NEAR(v, 100.f, 1e-4);
}

TEST(SwdPyramid, ReconstructionGivesTheImageBack) {
  const int size = 64;
  const std::vector<float> plane = random_plane(size, 2);
  const auto levels = swd_laplacian_pyramid(plane.data(), size, 3);
  EXPECT_EQ(levels[1].size(), 32u * 32u);
  const std::vector<float> back = swd_reconstruct(levels, size);
  ASSERT_EQ(back.size(), plane.size());
  float worst = 0;
  for (size_t i = 0; i < plane.size(); ++i) worst = std::max(worst, std::fabs(back[i] - plane[i]));
  EXPECT_LT(worst, 1e-3f);
}

TEST(SwdPyramid, LevelCountsAndSizes) {
  EXPECT_EQ(swd_level_count(8), 0);
  EXPECT_EQ(swd_level_count(16), 1);
  EXPECT_EQ(swd_level_count(32), 2);
  EXPECT_EQ(swd_level_count(64), 3);
  EXPECT_EQ(swd_level_count(128), 4);
  EXPECT_THROW(swd_check_image_size(8, 8, "x"), UserError);
  EXPECT_THROW(swd_check_image_size(32, 16, "x"), UserError);
  EXPECT_NO_THROW(swd_check_image_size(34, 34, "x"));  // 34 -> 17: only 34 is halved
  EXPECT_THROW(swd_check_image_size(66, 66, "x"), UserError);  // 66 -> 33 -> 16.5
  EXPECT_NO_THROW(swd_check_image_size(48, 48, "x"));
}

// n synthetic disc images (the trainer's synthetic source), float NCHW in [-1, 1].
std::vector<float> disc_images(int64_t first, int64_t n, int channels, int res) {
  DataConfig cfg;
  cfg.source = "synthetic";
  cfg.synthetic_count = first + n;
  const auto src = open_image_source(cfg, channels, res, 7);
  std::vector<float> out(static_cast<size_t>(n) * channels * res * res);
  for (int64_t i = 0; i < n; ++i) src->get(first + i, out.data() + static_cast<size_t>(i) * channels * res * res);
  return out;
}

SwdDescriptors set_of_f32(const std::vector<float>& nchw, int64_t n, int channels, int res, const SwdOptions& o) {
  SwdDescriptors s = swd_descriptor_set(res, channels, o);
  swd_add_images_f32(s, nchw.data(), n, o);
  swd_normalize(s);
  return s;
}

TEST(SwdDescriptors, BytesAndFloatsGiveTheSameDescriptorsBatchByBatch) {
  const int C = 3, R = 32;
  const int64_t n = 10;
  SwdOptions o;
  o.descriptors_per_image = 16;
  const std::vector<float> f = disc_images(0, n, C, R);
  std::vector<uint8_t> u8(f.size());
  for (int64_t i = 0; i < n; ++i)
    for (int c = 0; c < C; ++c)
      for (int p = 0; p < R * R; ++p) u8[(i * R * R + p) * C + c] = float_to_pixel(f[(i * C + c) * R * R + p]);
  SwdDescriptors whole = swd_descriptor_set(R, C, o);
  swd_add_images_f32(whole, f.data(), n, o);
  SwdDescriptors parts = swd_descriptor_set(R, C, o);
  swd_add_images_u8(parts, u8.data(), 3, o);
  swd_add_images_u8(parts, u8.data() + 3 * R * R * C, n - 3, o);
  ASSERT_EQ(whole.level_count(), 2);
  ASSERT_EQ(whole.rows(), n * 16);
  for (int l = 0; l < 2; ++l) EXPECT_EQ(whole.levels[l], parts.levels[l]) << "level " << l;
  // Another seed moves the patches.
  SwdOptions o2 = o;
  o2.seed = 1;
  SwdDescriptors other = swd_descriptor_set(R, C, o2);
  swd_add_images_f32(other, f.data(), n, o2);
  EXPECT_NE(whole.levels[0], other.levels[0]);
}

TEST(SwdDescriptors, SharesWithFirstImagePutTogetherEqualTheWholeSet) {
  // As the training hook measures over ranks: shares of 4, 4 and 2 images, each numbered from its first_image.
  const int C = 1, R = 32;
  const int64_t n = 10;
  SwdOptions o;
  o.descriptors_per_image = 8;
  const std::vector<float> f = disc_images(0, n, C, R);
  SwdDescriptors whole = swd_descriptor_set(R, C, o);
  swd_add_images_f32(whole, f.data(), n, o);
  std::vector<std::vector<float>> joined(whole.levels.size());
  for (int64_t first = 0; first < n; first += 4) {
    SwdDescriptors share = swd_descriptor_set(R, C, o);
    share.first_image = first;
    swd_add_images_f32(share, f.data() + first * C * R * R, std::min<int64_t>(4, n - first), o);
    for (size_t l = 0; l < joined.size(); ++l)
      joined[l].insert(joined[l].end(), share.levels[l].begin(), share.levels[l].end());
  }
  for (size_t l = 0; l < joined.size(); ++l) EXPECT_EQ(joined[l], whole.levels[l]) << "level " << l;
  // Numbered from 0 instead, the last share draws other patch positions.
  SwdDescriptors unnumbered = swd_descriptor_set(R, C, o);
  swd_add_images_f32(unnumbered, f.data() + 8 * C * R * R, 2, o);
  EXPECT_NE(std::vector<float>(whole.levels[0].end() - unnumbered.levels[0].size(), whole.levels[0].end()),
            unnumbered.levels[0]);
}

TEST(SwdDescriptors, NormalizedPerChannel) {
  SwdOptions o;
  o.descriptors_per_image = 32;
  const SwdDescriptors s = set_of_f32(disc_images(0, 20, 3, 32), 20, 3, 32, o);
  for (int c = 0; c < 3; ++c) {
    double sum = 0, sq = 0;
    int64_t n = 0;
    for (int64_t r = 0; r < s.rows(); ++r)
      for (int k = 0; k < 49; ++k) {
        const double v = s.levels[0][r * s.dim() + c * 49 + k];
        sum += v;
        sq += v * v;
        ++n;
      }
    EXPECT_NEAR(sum / n, 0.0, 1e-4);
    EXPECT_NEAR(sq / n, 1.0, 1e-3);
  }
}

TEST(SwdDistance, ZeroToItselfAndSymmetric) {
  SwdOptions o;
  o.descriptors_per_image = 32;
  const SwdDescriptors a = set_of_f32(disc_images(0, 40, 1, 32), 40, 1, 32, o);
  const SwdDescriptors b = set_of_f32(disc_images(40, 40, 1, 32), 40, 1, 32, o);
  const SwdResult self = swd_distance(a, a, o);
  ASSERT_EQ(self.per_level.size(), 2u);
  EXPECT_EQ(self.resolutions, (std::vector<int>{32, 16}));
  for (double v : self.per_level) EXPECT_EQ(v, 0.0);
  EXPECT_EQ(self.average, 0.0);
  const SwdResult ab = swd_distance(a, b, o), ba = swd_distance(b, a, o);
  for (size_t l = 0; l < 2; ++l) {
    EXPECT_GT(ab.per_level[l], 0.0);
    EXPECT_DOUBLE_EQ(ab.per_level[l], ba.per_level[l]);
  }
}

// Ranks share the directions in whole blocks: any split of the blocks gives each direction's mean, and
// the distance, bit for bit as one call over all of them does (what makes 1, 2 and 4 ranks agree).
TEST(SwdDistance, DirectionBlocksSplitAnyWayGiveTheSameBits) {
  SwdOptions o;
  o.descriptors_per_image = 16;
  o.dir_repeats = 2;
  o.dirs_per_repeat = 20;  // 40 directions: blocks of 16, 16 and 8
  const SwdDescriptors a = set_of_f32(disc_images(0, 20, 1, 32), 20, 1, 32, o);
  const SwdDescriptors b = set_of_f32(disc_images(20, 20, 1, 32), 20, 1, 32, o);
  ASSERT_EQ(swd_direction_blocks(o), 3);
  const auto whole = swd_direction_means(a, b, o, 0, 3);
  ASSERT_EQ(whole.size(), 2u);
  ASSERT_EQ(whole[0].size(), 40u);
  for (int split = 0; split <= 3; ++split) {
    const auto head = swd_direction_means(a, b, o, 0, split), tail = swd_direction_means(a, b, o, split, 3);
    for (size_t l = 0; l < whole.size(); ++l) {
      std::vector<double> joined = head[l];
      joined.insert(joined.end(), tail[l].begin(), tail[l].end());
      ASSERT_EQ(joined.size(), whole[l].size()) << "split " << split;
      for (size_t d = 0; d < joined.size(); ++d)
        EXPECT_EQ(std::bit_cast<uint64_t>(joined[d]), std::bit_cast<uint64_t>(whole[l][d])) << split << " " << d;
    }
  }
  // A share past the last block is empty; the distance from the means is swd_distance's.
  EXPECT_TRUE(swd_direction_means(a, b, o, 3, 2)[0].empty());
  const SwdResult direct = swd_distance(a, b, o), parts = swd_from_direction_means(a, whole);
  EXPECT_EQ(std::bit_cast<uint64_t>(direct.average), std::bit_cast<uint64_t>(parts.average));
  EXPECT_EQ(parts.resolutions, direct.resolutions);
}

// The distance by definition, in double: project with the same directions, sort, mean |a - b|.
TEST(SwdDistance, MatchesANaiveDoubleComputation) {
  SwdOptions o;
  o.descriptors_per_image = 16;
  o.dir_repeats = 2;
  o.dirs_per_repeat = 20;  // 40 directions: two full chunks and a partial one
  const int C = 3, R = 32;
  const SwdDescriptors a = set_of_f32(disc_images(0, 12, C, R), 12, C, R, o);
  std::vector<float> noise(12 * C * R * R);
  fill_uniform(noise.data(), static_cast<int64_t>(noise.size()), -1.f, 1.f, 5, RngStream::test, 0);
  const SwdDescriptors b = set_of_f32(noise, 12, C, R, o);
  const SwdResult got = swd_distance(a, b, o);
  for (int l = 0; l < a.level_count(); ++l) {
    const std::vector<float> dirs = swd_directions(l, a.dim(), o);
    for (int d = 0; d < 40; ++d) {
      double norm = 0;
      for (int k = 0; k < a.dim(); ++k) norm += double(dirs[d * a.dim() + k]) * dirs[d * a.dim() + k];
      ASSERT_NEAR(norm, 1.0, 1e-5);
    }
    double total = 0;
    for (int d = 0; d < 40; ++d) {
      std::vector<double> pa(a.rows()), pb(b.rows());
      for (int64_t r = 0; r < a.rows(); ++r)
        for (int k = 0; k < a.dim(); ++k) {
          pa[r] += double(dirs[d * a.dim() + k]) * a.levels[l][r * a.dim() + k];
          pb[r] += double(dirs[d * a.dim() + k]) * b.levels[l][r * b.dim() + k];
        }
      std::sort(pa.begin(), pa.end());
      std::sort(pb.begin(), pb.end());
      double s = 0;
      for (size_t r = 0; r < pa.size(); ++r) s += std::fabs(pa[r] - pb[r]);
      total += s / pa.size();
    }
    const double want = total / 40;
    EXPECT_NEAR(got.per_level[l], want, 1e-5 * want) << "level " << l;
  }
}

// The metric's point: two halves of one image set are close, images against noise are far.
TEST(SwdDistance, HalvesOfOneSetAreCloseNoiseIsFar) {
  SwdOptions o;  // the paper's 128 patches per image and 512 directions
  const int C = 3, R = 32;
  const int64_t n = 256;
  const SwdDescriptors first = set_of_f32(disc_images(0, n, C, R), n, C, R, o);
  const SwdDescriptors second = set_of_f32(disc_images(n, n, C, R), n, C, R, o);
  std::vector<float> noise(n * C * R * R);
  fill_uniform(noise.data(), static_cast<int64_t>(noise.size()), -1.f, 1.f, 11, RngStream::test, 0);
  const SwdDescriptors uniform = set_of_f32(noise, n, C, R, o);
  const SwdResult halves = swd_distance(first, second, o), vs_noise = swd_distance(first, uniform, o);
  for (size_t l = 0; l < halves.per_level.size(); ++l)
    std::printf("SWDx1e3_%d: halves %.4f, discs vs uniform noise %.4f (ratio %.1f)\n", halves.resolutions[l],
                halves.per_level[l] * 1e3, vs_noise.per_level[l] * 1e3, vs_noise.per_level[l] / halves.per_level[l]);
  std::printf("SWDx1e3_avg: halves %.4f, discs vs uniform noise %.4f (ratio %.1f)\n", halves.average * 1e3,
              vs_noise.average * 1e3, vs_noise.average / halves.average);
  EXPECT_GT(vs_noise.average, 10 * halves.average);
  for (size_t l = 0; l < halves.per_level.size(); ++l) EXPECT_GT(vs_noise.per_level[l], 5 * halves.per_level[l]);
}

}  // namespace
}  // namespace gt
