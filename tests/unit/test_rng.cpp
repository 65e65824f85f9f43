// Tests for Philox4x32-10 and the keyed draws: known answers, distributions, and rank/offset invariance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <set>
#include <vector>

#include "core/error.h"
#include "core/rng.h"

namespace gt {
namespace {

void expect_words(Philox4 got, uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3) {
  EXPECT_EQ(got.v[0], w0);
  EXPECT_EQ(got.v[1], w1);
  EXPECT_EQ(got.v[2], w2);
  EXPECT_EQ(got.v[3], w3);
}

// Known-answer vectors of Random123's kat_vectors file for philox4x32 with 10 rounds.
TEST(Philox, KnownAnswerZeros) {
  expect_words(philox4x32_10(Philox4{{0, 0, 0, 0}}, 0, 0), 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8);
}

TEST(Philox, KnownAnswerOnes) {
  const uint32_t f = 0xffffffffu;
  expect_words(philox4x32_10(Philox4{{f, f, f, f}}, f, f), 0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd);
}

TEST(Philox, KnownAnswerPi) {
  expect_words(philox4x32_10(Philox4{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, 0xa4093822, 0x299f31d0),
               0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1);
}

TEST(Philox, KeysDifferAcrossSeedsAndStreams) {
  std::set<uint64_t> keys;
  for (uint64_t seed : {0ull, 1ull, 2ull, 1ull << 32, ~0ull}) {
    for (RngStream stream : {RngStream::init, RngStream::noise, RngStream::permutation, RngStream::flip}) {
      uint32_t k0, k1;
      rng_key(seed, stream, &k0, &k1);
      keys.insert((uint64_t{k1} << 32) | k0);
    }
  }
  EXPECT_EQ(keys.size(), 20u);
}

TEST(Uniform, OpenZeroEndpoints) {
  EXPECT_EQ(uniform_open0(0u), std::ldexp(1.f, -24));
  EXPECT_EQ(uniform_open0(0xffffffffu), 1.f);
  EXPECT_EQ(uniform_closed0(0u), 0.f);
  EXPECT_LT(uniform_closed0(0xffffffffu), 1.f);
}

// The float log used by Box-Muller, on every input it can receive (k * 2^-24, k = 1..2^24).
TEST(Uniform, PhiloxLogIsAccurate) {
  double worst_ulps = 0;
  for (uint32_t k = 1; k <= (1u << 24); ++k) {
    const float x = static_cast<float>(k) * std::ldexp(1.f, -24);
    const double exact = std::log(static_cast<double>(x));
    const double got = philox_log(x);
    const double ulp = exact == 0 ? 0x1p-149 : std::ldexp(1.0, std::ilogb(exact) - 23);
    worst_ulps = std::max(worst_ulps, std::abs(got - exact) / ulp);
  }
  EXPECT_LE(worst_ulps, 2.0);
}

TEST(Uniform, PhiloxSinCosIsAccurate) {
  double worst = 0;
  for (uint32_t k = 0; k < (1u << 24); k += 7) {
    float c, s;
    philox_sincos_turns(k, &c, &s);
    const double angle = 2 * M_PI * static_cast<double>(k) / 16777216.0;
    worst = std::max({worst, std::abs(c - std::cos(angle)), std::abs(s - std::sin(angle))});
  }
  EXPECT_LE(worst, 2e-7);  // a couple of float ulps at magnitude 1
}

struct Moments {
  double mean = 0, variance = 0, fourth = 0, within_one_sigma = 0;
};

Moments moments(const std::vector<float>& x) {
  Moments m;
  for (float v : x) m.mean += v;
  m.mean /= static_cast<double>(x.size());
  for (float v : x) {
    const double d = v - m.mean;
    m.variance += d * d;
    m.fourth += d * d * d * d;
    m.within_one_sigma += std::abs(v) < 1.0;
  }
  m.variance /= static_cast<double>(x.size());
  m.fourth /= static_cast<double>(x.size());
  m.within_one_sigma /= static_cast<double>(x.size());
  return m;
}

// Bounds are 5 standard errors of each statistic of n standard normal draws.
void expect_standard_normal(const std::vector<float>& x) {
  const double n = static_cast<double>(x.size());
  const Moments m = moments(x);
  EXPECT_NEAR(m.mean, 0.0, 5 * std::sqrt(1 / n));
  EXPECT_NEAR(m.variance, 1.0, 5 * std::sqrt(2 / n));
  EXPECT_NEAR(m.fourth, 3.0, 5 * std::sqrt(96 / n));  // Var(z^4) = 105 - 9
  const double p = 0.682689492137;                    // P(|z| < 1)
  EXPECT_NEAR(m.within_one_sigma, p, 5 * std::sqrt(p * (1 - p) / n));
}

TEST(FillNormal, MomentsOfAMillionDraws) {
  std::vector<float> x(1000000);
  fill_normal(x.data(), static_cast<int64_t>(x.size()), 0.f, 1.f, 42, RngStream::test, 0);
  expect_standard_normal(x);
}

TEST(FillNormal, EveryLaneIsNormal) {
  // Each of the four lanes of a block (two Box-Muller pairs, cos and sin halves) on its own.
  std::vector<float> x(1 << 20);
  fill_normal(x.data(), static_cast<int64_t>(x.size()), 0.f, 1.f, 7, RngStream::test, 0);
  for (int lane = 0; lane < 4; ++lane) {
    std::vector<float> one_lane;
    for (size_t i = lane; i < x.size(); i += 4) one_lane.push_back(x[i]);
    SCOPED_TRACE(lane);
    expect_standard_normal(one_lane);
  }
}

TEST(FillNormal, MatchesDoublePrecisionBoxMuller) {
  uint32_t k0, k1;
  rng_key(5, RngStream::init, &k0, &k1);
  std::vector<float> x(4000);
  fill_normal(x.data(), static_cast<int64_t>(x.size()), 0.f, 1.f, 5, RngStream::init, 0);
  for (size_t j = 0; j < x.size(); ++j) {
    const Philox4 w = philox4x32_10(Philox4{{static_cast<uint32_t>(j / 4), 0, 0, 0}}, k0, k1);
    const int pair = static_cast<int>(j % 4) & 2;
    const double u = ((w.v[pair] >> 8) + 1.0) / 16777216.0;
    const double angle = 2 * M_PI * (w.v[pair + 1] >> 8) / 16777216.0;
    const double radius = std::sqrt(-2 * std::log(u));
    const double expected = (j % 2) ? radius * std::sin(angle) : radius * std::cos(angle);
    ASSERT_NEAR(x[j], expected, 1e-6 * std::max(1.0, std::abs(expected))) << "draw " << j;
  }
}

// The documented scheme, one draw at a time with the per-lane device helper: the host fill (which
// works a block at a time) must give the same bits.
TEST(FillNormal, MatchesTheDocumentedCounter) {
  const uint64_t offset = (uint64_t{1} << 34) + 3;  // a block index above 32 bits
  std::vector<float> x(37);
  fill_normal(x.data(), 37, 0.25f, 3.f, 21, RngStream::flip, offset);
  uint32_t k0, k1;
  rng_key(21, RngStream::flip, &k0, &k1);
  for (uint64_t i = 0; i < x.size(); ++i) {
    const uint64_t j = offset + i;
    const uint64_t block = j / 4;
    const Philox4 counter{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0, 0}};
    const Philox4 w = philox4x32_10(counter, k0, k1);
    EXPECT_EQ(x[i], std::fma(3.f, normal_from_block(w, static_cast<int>(j % 4)), 0.25f)) << "draw " << j;
  }
}

TEST(FillNormal, MeanAndStdAreAnFmaOfTheStandardDraw) {
  std::vector<float> standard(999), scaled(999);
  fill_normal(standard.data(), 999, 0.f, 1.f, 3, RngStream::init, 11);
  fill_normal(scaled.data(), 999, 0.5f, 0.02f, 3, RngStream::init, 11);
  for (size_t i = 0; i < standard.size(); ++i) ASSERT_EQ(scaled[i], std::fma(0.02f, standard[i], 0.5f));
}

TEST(FillNormal, OffsetWindowsAgreeWithALongerFill) {
  std::vector<float> whole(1000);
  fill_normal(whole.data(), 1000, 0.f, 1.f, 9, RngStream::init, 0);
  for (int64_t offset : {0, 1, 2, 3, 5, 137, 996}) {
    for (int64_t n : {1, 2, 3, 4, 7, 4}) {
      if (offset + n > 1000) continue;
      std::vector<float> window(n);
      fill_normal(window.data(), n, 0.f, 1.f, 9, RngStream::init, static_cast<uint64_t>(offset));
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(window[i], whole[offset + i]) << offset << "+" << i;
    }
  }
}

TEST(FillNormal, ParallelFillMatchesSerialWindows) {
  // Big enough to take the OpenMP path; small windows run serially and must give the same bits.
  const int64_t n = (1 << 18) + 3;
  std::vector<float> whole(n);
  fill_normal(whole.data(), n, 0.f, 1.f, 1, RngStream::init, 6);
  for (int64_t start : {int64_t{0}, n / 3, n - 5}) {
    std::vector<float> window(5);
    fill_normal(window.data(), 5, 0.f, 1.f, 1, RngStream::init, static_cast<uint64_t>(6 + start));
    for (int64_t i = 0; i < 5; ++i) ASSERT_EQ(window[i], whole[start + i]);
  }
}

TEST(FillNormal, SeedsAndStreamsGiveDifferentDraws) {
  std::vector<float> a(64), b(64), c(64);
  fill_normal(a.data(), 64, 0.f, 1.f, 1, RngStream::init, 0);
  fill_normal(b.data(), 64, 0.f, 1.f, 2, RngStream::init, 0);
  fill_normal(c.data(), 64, 0.f, 1.f, 1, RngStream::synthetic, 0);
  int same_ab = 0, same_ac = 0;
  for (int i = 0; i < 64; ++i) {
    same_ab += a[i] == b[i];
    same_ac += a[i] == c[i];
  }
  EXPECT_EQ(same_ab, 0);
  EXPECT_EQ(same_ac, 0);
}

TEST(FillUniform, InRangeWithTheRightMean) {
  const int64_t n = 1000000;
  std::vector<float> x(n);
  fill_uniform(x.data(), n, -0.25f, 0.75f, 4, RngStream::init, 0);
  double sum = 0;
  for (float v : x) {
    ASSERT_GE(v, -0.25f);
    ASSERT_LT(v, 0.75f);
    sum += v;
  }
  EXPECT_NEAR(sum / n, 0.25, 5 * std::sqrt(1.0 / 12 / n));
}

TEST(FillUniform, NeverReachesTheUpperBound) {
  // 1 + 2^-24 * (2^24 - 1) rounds to 2 in float: the largest draw must be kept below hi.
  std::vector<float> x(1 << 16);
  fill_uniform(x.data(), static_cast<int64_t>(x.size()), 1.f, 2.f, 4, RngStream::init, 0);
  for (float v : x) ASSERT_LT(v, 2.f);
  const float lo = 1e8f, hi = 1e8f + 8.f;  // only a few floats in [lo, hi)
  fill_uniform(x.data(), static_cast<int64_t>(x.size()), lo, hi, 4, RngStream::init, 0);
  for (float v : x) {
    ASSERT_GE(v, lo);
    ASSERT_LT(v, hi);
  }
}

TEST(FillUniform, OffsetWindowsAgreeWithALongerFill) {
  std::vector<float> whole(100), window(10);
  fill_uniform(whole.data(), 100, 0.f, 1.f, 2, RngStream::init, 0);
  fill_uniform(window.data(), 10, 0.f, 1.f, 2, RngStream::init, 33);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(window[i], whole[33 + i]);
}

std::vector<float> noise(int64_t count, int nz, uint64_t seed, uint64_t step, int64_t first) {
  std::vector<float> z(static_cast<size_t>(count * nz));
  fill_noise(z.data(), count, nz, seed, step, first);
  return z;
}

TEST(FillNoise, AnySplitOfTheBatchDrawsTheSameVectors) {
  for (int nz : {1, 3, 100, 128}) {
    const int64_t batch = 64;
    const std::vector<float> whole = noise(batch, nz, 17, 5, 0);
    // Splits over 1, 2, 3 and 7 "ranks", uneven included.
    for (std::vector<int64_t> bounds : std::vector<std::vector<int64_t>>{
             {0, 64}, {0, 32, 64}, {0, 13, 40, 64}, {0, 9, 18, 27, 36, 45, 54, 64}}) {
      std::vector<float> joined;
      for (size_t r = 0; r + 1 < bounds.size(); ++r) {
        const std::vector<float> part = noise(bounds[r + 1] - bounds[r], nz, 17, 5, bounds[r]);
        joined.insert(joined.end(), part.begin(), part.end());
      }
      ASSERT_EQ(joined, whole) << "nz " << nz << ", " << bounds.size() - 1 << " parts";
    }
  }
}

TEST(FillNoise, LargeBatchTakesTheParallelPathWithTheSameBits) {
  const int nz = 100;
  const std::vector<float> whole = noise(4096, nz, 3, 2, 0);
  const std::vector<float> tail = noise(3, nz, 3, 2, 4093);
  ASSERT_TRUE(std::equal(tail.begin(), tail.end(), whole.end() - 3 * nz));
  expect_standard_normal(whole);
}

TEST(FillNoise, MatchesTheDocumentedCounter) {
  const int nz = 10;
  const uint64_t step = (uint64_t{1} << 33) + 5;
  const std::vector<float> z = noise(2, nz, 8, step, 40);
  uint32_t k0, k1;
  rng_key(8, RngStream::noise, &k0, &k1);
  for (int r = 0; r < 2; ++r) {
    for (int e = 0; e < nz; ++e) {
      const Philox4 counter{{static_cast<uint32_t>(e / 4), static_cast<uint32_t>(40 + r), 5u, 2u}};
      EXPECT_EQ(z[r * nz + e], normal_from_block(philox4x32_10(counter, k0, k1), e % 4));
    }
  }
}

TEST(FillNoise, StepsSeedsAndSamplesDiffer) {
  const std::vector<float> base = noise(4, 16, 1, 0, 0);
  for (const std::vector<float>& other : {noise(4, 16, 1, 1, 0), noise(4, 16, 2, 0, 0), noise(4, 16, 1, 0, 4),
                                          noise(4, 16, 1, uint64_t{1} << 32, 0)}) {
    int same = 0;
    for (size_t i = 0; i < base.size(); ++i) same += base[i] == other[i];
    EXPECT_EQ(same, 0);
  }
  // Rows of one batch are not copies of each other.
  EXPECT_FALSE(std::equal(base.begin(), base.begin() + 16, base.begin() + 16));
}

TEST(FillNoise, DiffersFromTheInitStreamWithTheSameSeed) {
  const std::vector<float> z = noise(1, 64, 1, 0, 0);
  std::vector<float> w(64);
  fill_normal(w.data(), 64, 0.f, 1.f, 1, RngStream::init, 0);
  EXPECT_NE(z, w);
}

std::vector<int64_t> perm(int64_t n, uint64_t seed, uint64_t epoch) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  permutation(p.data(), n, seed, epoch);
  return p;
}

TEST(Permutation, IsAPermutation) {
  for (int64_t n : {0, 1, 2, 3, 10, 1000, 100003}) {
    std::vector<int64_t> p = perm(n, 5, 1);
    std::sort(p.begin(), p.end());
    std::vector<int64_t> identity(static_cast<size_t>(n));
    std::iota(identity.begin(), identity.end(), 0);
    EXPECT_EQ(p, identity) << "n " << n;
  }
}

TEST(Permutation, DependsOnSeedAndEpochOnly) {
  EXPECT_EQ(perm(1000, 5, 3), perm(1000, 5, 3));
  EXPECT_NE(perm(1000, 5, 3), perm(1000, 5, 4));
  EXPECT_NE(perm(1000, 5, 3), perm(1000, 6, 3));
  EXPECT_NE(perm(1000, 5, 3), perm(1000, 5, 3 + (uint64_t{1} << 32)));
}

TEST(Permutation, AllOrdersOfFourAreEquallyLikely) {
  // 24 orders over 48000 epochs: Pearson's chi-square with 23 degrees of freedom. A fair shuffle
  // exceeds 70 with probability 1.2e-6; the classic swap-with-any-position bug scores about 1400.
  const int epochs = 48000;
  std::vector<int> counts(256, 0);
  for (int e = 0; e < epochs; ++e) {
    const std::vector<int64_t> p = perm(4, 12, static_cast<uint64_t>(e));
    ++counts[p[0] * 64 + p[1] * 16 + p[2] * 4 + p[3]];
  }
  double chi2 = 0;
  int seen = 0;
  for (int c : counts) {
    if (c == 0) continue;
    ++seen;
    const double expected = epochs / 24.0;
    chi2 += (c - expected) * (c - expected) / expected;
  }
  EXPECT_EQ(seen, 24);
  EXPECT_LT(chi2, 70.0);
}

TEST(Permutation, EveryElementVisitsEveryPosition) {
  // The first position of a permutation of 1000 is uniform: mean 499.5, sd 288.7 per epoch.
  const int epochs = 4000;
  double sum = 0;
  for (int e = 0; e < epochs; ++e) sum += static_cast<double>(perm(1000, 3, static_cast<uint64_t>(e))[0]);
  EXPECT_NEAR(sum / epochs, 499.5, 5 * 288.7 / std::sqrt(epochs));
}

}  // namespace
}  // namespace gt
