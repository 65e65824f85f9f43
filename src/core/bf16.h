// bfloat16 bit patterns to and from float on the host and the device: the conversions of the bf16 gradient all-reduce (dist.reduce_precision).
#pragma once
#include <cstdint>
#include <cstring>

#include "core/hd.h"

namespace gt {

// Round to nearest, ties to even (as __float2bfloat16 and torch's .bfloat16()); a NaN stays a quiet NaN.
GT_HD uint16_t float_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

GT_HD float bf16_bits_to_float(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace gt
