// Inline Philox4x32-10 and the float transforms on its output, shared bit for bit by the CPU and CUDA backends.
#pragma once
// Included from core/rng.h, after its declarations.
#include <math.h>  // fmaf, sqrtf: the same IEEE operations on host and device
#include <stdint.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------
// THE SPECIFICATION a device kernel must reproduce bit for bit.
//
// Philox4x32-10 (Salmon et al., SC'11; Random123): multipliers 0xD2511F53 and 0xCD9E8D57, Weyl key
// increments 0x9E3779B9 and 0xBB67AE85, 10 rounds, the key bumped between rounds.
//
// Key of (seed, stream): x = splitmix64_mix(seed + 0x9E3779B97F4A7C15 * stream);
//   k0 = low 32 bits of x, k1 = high 32 bits. (rng_key)
//
// Counters (a block is one Philox call, four 32-bit words w0..w3):
//   fill_normal / fill_uniform, draw j = offset + i:   block b = j / 4, lane = j % 4,
//     counter {lo32(b), hi32(b), 0, 0}.
//   fill_noise, element e of global sample s at step t:  block b = e / 4, lane = e % 4,
//     counter {b, s, lo32(t), hi32(t)}, key rng_key(seed, RngStream::noise).
//   penalty_mix, global sample s of critic batch b: word w0 of counter {0, s, lo32(b), hi32(b)}, key
//     rng_key(seed, RngStream::penalty_mix), as uniform_closed0 (in [0, 1)).
//   permutation, word d of epoch p: counter {lo32(d/4), hi32(d/4), lo32(p), hi32(p)}, lane d % 4,
//     key rng_key(seed, RngStream::permutation); Fisher-Yates from the top, position i swapped
//     with a draw in [0, i] by Lemire's multiply-shift with rejection (host only).
//
// Uniform from a word w: u = (w >> 8) * 2^-24 in [0, 1); uniform_open0(w) = ((w >> 8) + 1) * 2^-24
//   in (0, 1]. Both exact in float.
// Uniform in [lo, hi): fmaf(hi - lo, u(w_lane), lo), then values >= hi become the float below hi.
// Normal (Box-Muller on the pair of words (w0,w1) for lanes 0,1 and (w2,w3) for lanes 2,3):
//   r = sqrtf(-2 * philox_log(uniform_open0(w_even))); (c, s) = philox_sincos_turns(w_odd >> 8);
//   the even lane is r * c, the odd lane r * s; fill_normal writes fmaf(std, z, mean).
//   philox_log and philox_sincos_turns are written below with fmaf, *, /, and sqrtf only, so any
//   IEEE float implementation gets the same bits. Do not compile them with fast-math
//   (--use_fast_math changes division and sqrt), and keep every multiply-add an explicit fmaf.
// ---------------------------------------------------------------------------------------------

namespace gt {

namespace philox_detail {

constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;
constexpr uint32_t kWeyl1 = 0xBB67AE85u;

GT_HD uint32_t mulhi32(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
}

GT_HD Philox4 philox_round(Philox4 c, uint32_t k0, uint32_t k1) {
  const uint32_t hi0 = mulhi32(kMul0, c.v[0]);
  const uint32_t lo0 = kMul0 * c.v[0];
  const uint32_t hi1 = mulhi32(kMul1, c.v[2]);
  const uint32_t lo1 = kMul1 * c.v[2];
  return Philox4{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
}

GT_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
#endif
}

GT_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
#endif
}

constexpr float kTwoPowMinus24 = 5.9604644775390625e-08f;  // 2^-24

}  // namespace philox_detail

GT_HD Philox4 philox4x32_10(Philox4 ctr, uint32_t k0, uint32_t k1) {
  using namespace philox_detail;
  ctr = philox_round(ctr, k0, k1);
  for (int r = 1; r < 10; ++r) {
    k0 += kWeyl0;
    k1 += kWeyl1;
    ctr = philox_round(ctr, k0, k1);
  }
  return ctr;
}

GT_HD float uniform_open0(uint32_t bits) {
  return static_cast<float>((bits >> 8) + 1u) * philox_detail::kTwoPowMinus24;
}

// Uniform in [0, 1) with 24 random bits: exact in float.
GT_HD float uniform_closed0(uint32_t bits) {
  return static_cast<float>(bits >> 8) * philox_detail::kTwoPowMinus24;
}

// splitmix64's output mix (a bijection), so nearby seeds and stream ids give unrelated keys.
GT_HD uint64_t splitmix64_mix(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

GT_HD void rng_key(uint64_t seed, RngStream stream, uint32_t* k0, uint32_t* k1) {
  const uint64_t x = splitmix64_mix(seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(stream));
  *k0 = static_cast<uint32_t>(x);
  *k1 = static_cast<uint32_t>(x >> 32);
}

// Counter of block b of a flat draw sequence (fill_normal, fill_uniform).
GT_HD Philox4 flat_counter(uint64_t block) {
  return Philox4{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0u, 0u}};
}

// Counter of the generator noise: element block of one global sample at one step.
GT_HD Philox4 noise_counter(uint32_t element_block, uint32_t sample, uint64_t step) {
  return Philox4{{element_block, sample, static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32)}};
}

// WGAN-GP's interpolation weight of one global sample of one critic batch (the key of RngStream::penalty_mix).
GT_HD float penalty_mix_value(uint32_t k0, uint32_t k1, uint32_t sample, uint64_t batch) {
  return uniform_closed0(philox4x32_10(noise_counter(0u, sample, batch), k0, k1).v[0]);
}

// Natural log of a normal (not subnormal) positive float; our uniforms lie in [2^-24, 1]. Within a
// few ulp, from IEEE-exact operations only, so host and device agree to the bit. x = m * 2^e with
// m in [sqrt(1/2), sqrt(2)); log(m) = 2 atanh(f / (2 + f)) with f = m - 1 (exact by Sterbenz).
GT_HD float philox_log(float x) {
  using namespace philox_detail;
  const uint32_t bits = float_to_bits(x);
  int exponent = static_cast<int>((bits >> 23) & 0xFFu) - 127;
  float m = bits_to_float((bits & 0x007FFFFFu) | 0x3F800000u);  // in [1, 2)
  if (m > 1.41421356f) {
    m *= 0.5f;
    exponent += 1;
  }
  const float f = m - 1.f;
  const float s = f / (2.f + f);
  const float s2 = s * s;
  // 2 atanh(s) = 2s + 2 s^3 (1/3 + s^2/5 + s^4/7 + s^6/9 + s^8/11); |s| <= 0.172, truncation < 1e-10.
  float series = 2.f / 11.f;
  series = fmaf(series, s2, 2.f / 9.f);
  series = fmaf(series, s2, 2.f / 7.f);
  series = fmaf(series, s2, 2.f / 5.f);
  series = fmaf(series, s2, 2.f / 3.f);
  const float log_m = fmaf(series * s2, s, 2.f * s);
  // ln 2 as a short head (15 significant bits) plus the rest, so exponent * ln 2 keeps full precision.
  constexpr float kLn2Hi = 0.693145751953125f;     // 0x3F317200
  constexpr float kLn2Lo = 1.428606765330187e-06f;  // ln 2 - kLn2Hi
  const float e = static_cast<float>(exponent);
  return fmaf(e, kLn2Hi, fmaf(e, kLn2Lo, log_m));
}

// cos and sin of 2*pi*k/2^24 for an integer k in [0, 2^24), from IEEE-exact operations only.
// The quadrant and the mirror about pi/4 are taken on the integer, so the polynomial only ever
// sees angles in [0, pi/4].
GT_HD void philox_sincos_turns(uint32_t k, float* cos_out, float* sin_out) {
  const uint32_t quadrant = (k >> 22) & 3u;
  uint32_t r = k & 0x3FFFFFu;  // position inside the quarter turn, in units of 2^-24 turns
  const bool mirrored = r > 0x200000u;
  if (mirrored) r = 0x400000u - r;  // sin(pi/2 - a) = cos(a)
  constexpr float kRadiansPerUnit = 3.7450703871400037e-07f;  // 2*pi / 2^24
  const float a = static_cast<float>(r) * kRadiansPerUnit;    // in [0, pi/4]
  const float a2 = a * a;
  // Taylor series, truncation below 2e-9 on [0, pi/4].
  float sp = 1.f / 362880.f;
  sp = fmaf(sp, a2, -1.f / 5040.f);
  sp = fmaf(sp, a2, 1.f / 120.f);
  sp = fmaf(sp, a2, -1.f / 6.f);
  const float sin_a = fmaf(sp * a2, a, a);
  float cp = -1.f / 3628800.f;
  cp = fmaf(cp, a2, 1.f / 40320.f);
  cp = fmaf(cp, a2, -1.f / 720.f);
  cp = fmaf(cp, a2, 1.f / 24.f);
  cp = fmaf(cp, a2, -0.5f);
  const float cos_a = fmaf(cp, a2, 1.f);
  const float c = mirrored ? sin_a : cos_a;  // cos and sin of the angle inside the quadrant
  const float s = mirrored ? cos_a : sin_a;
  switch (quadrant) {
    case 0: *cos_out = c; *sin_out = s; break;
    case 1: *cos_out = -s; *sin_out = c; break;
    case 2: *cos_out = -c; *sin_out = -s; break;
    default: *cos_out = s; *sin_out = -c; break;
  }
}

// Box-Muller on one pair of words: radius from the first, angle from the second; the two normals
// are lanes 2p (cosine) and 2p + 1 (sine) of a block whose words 2p, 2p + 1 these are.
GT_HD void normal_pair(uint32_t radius_bits, uint32_t angle_bits, float* z_cos, float* z_sin) {
  const float radius = sqrtf(-2.f * philox_log(uniform_open0(radius_bits)));
  float c, s;
  philox_sincos_turns(angle_bits >> 8, &c, &s);
  *z_cos = radius * c;
  *z_sin = radius * s;
}

// Standard normal of one lane (0..3) of a Philox block: Box-Muller on (w0,w1) or (w2,w3).
GT_HD float normal_from_block(const Philox4& w, int lane) {
  const int pair = lane & 2;
  float z_cos, z_sin;
  normal_pair(w.v[pair], w.v[pair + 1], &z_cos, &z_sin);
  return (lane & 1) ? z_sin : z_cos;
}

// All four normals of a block, two Box-Muller pairs: the same bits as normal_from_block per lane.
GT_HD void normals_of_block(const Philox4& w, float z[4]) {
  normal_pair(w.v[0], w.v[1], &z[0], &z[1]);
  normal_pair(w.v[2], w.v[3], &z[2], &z[3]);
}

}  // namespace gt
