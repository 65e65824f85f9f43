// Fuzz target: the bytes as a JPEG or PNG file's contents through decode_image (EXIF orientation included).
#include <algorithm>

#include "core/error.h"
#include "data/image_decode.h"
#include "fuzz_util.h"

namespace {

// The size check itself is what the fuzzer should reach, not a 100-megapixel decode per input: a
// lower limit keeps each execution fast (the limit's code path is the same).
constexpr int64_t kFuzzMaxPixels = 4'000'000;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The EXIF parser reads APP1 payloads; give it the raw bytes too (it bounds-checks every read).
  const int orientation = gt::exif_orientation(data, size);
  check(orientation >= 1 && orientation <= 8);
  // Gray for odd sizes, RGB for even: both conversions get inputs without decoding everything twice.
  const int channels = size % 2 ? 1 : 3;
  gt::DecodeResult r = gt::decode_image(data, size, channels, kFuzzMaxPixels);
  if (!r.ok()) return 0;  // a bad file is reported, never thrown
  const gt::PixelImage& im = r.image;
  check(im.channels == channels && im.height > 0 && im.width > 0 &&
        int64_t{im.height} * im.width <= kFuzzMaxPixels &&
        im.pixels.size() == size_t(im.height) * size_t(im.width) * size_t(channels));
  // Every orientation on a small image: 5..8 swap the sides and must keep every pixel.
  if (int64_t{im.height} * im.width <= 4096) {
    for (int o = 1; o <= 8; ++o) {
      const gt::PixelImage turned = gt::apply_exif_orientation(im, o);
      check(turned.pixels.size() == im.pixels.size());
      check(o >= 5 ? turned.height == im.width && turned.width == im.height
                   : turned.height == im.height && turned.width == im.width);
    }
  }
  return 0;
}
