// fnv1a64: a 64-bit FNV-1a hash that is the same in every build (configs compared across ranks, checkpoint digests).
#pragma once
#include <cstdint>
#include <string_view>

namespace gt {

constexpr uint64_t kFnv1aStart = 14695981039346656037ull;

// Pass the previous result as start to hash several pieces as one.
constexpr uint64_t fnv1a64(std::string_view bytes, uint64_t start = kFnv1aStart) {
  uint64_t h = start;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace gt
