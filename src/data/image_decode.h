// Decoding JPEG (libjpeg-turbo) and PNG (libpng) files into 8-bit gray or RGB pixels: EXIF orientation, alpha, bit depths.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gt {

// Images with more pixels than this are refused from their header, before any pixel memory is allocated.
constexpr int64_t kMaxImagePixels = 100'000'000;

// Why a file gave no image. Every kind is a property of the file, never a reason to stop an ingest.
// too_small: smaller than an explicit crop box (set by ingest, not by the decoder).
enum class ImageProblem { none, empty, not_an_image, truncated, corrupt, too_large, too_small, unreadable };
const char* problem_name(ImageProblem problem);

// 8-bit pixels, row-major HWC.
struct PixelImage {
  int height = 0, width = 0, channels = 0;
  std::vector<uint8_t> pixels;
};

struct DecodeResult {
  ImageProblem problem = ImageProblem::none;
  std::string detail;  // the library's message or what was found instead of an image
  PixelImage image;
  bool ok() const { return problem == ImageProblem::none; }
};

// Decodes a whole JPEG or PNG file held in memory (the format is told by its signature, not its
// name) into `channels` channels: 1 = luma (BT.601: 0.299 R + 0.587 G + 0.114 B), 3 = RGB (gray
// is repeated). Alpha is composited on black (a transparent pixel becomes black); 16-bit samples
// are scaled to 8 bits; palettes, low bit depths and interlacing are expanded; PNG gamma is
// ignored (samples are taken as stored, as PIL does). JPEG EXIF orientation is applied, so the
// result is the image as a viewer shows it. Never throws for a bad file: the problem is returned.
DecodeResult decode_image(const uint8_t* data, size_t size, int channels, int64_t max_pixels = kMaxImagePixels);

// The orientation (1..8) in the payload of a JPEG APP1 segment ("Exif\0\0" + TIFF); 1 when the
// segment is not Exif, has no orientation tag, or is malformed. Every read is bounds-checked.
int exif_orientation(const uint8_t* app1, size_t size);

// The image as displayed for EXIF orientation 1..8 (5..8 swap height and width).
PixelImage apply_exif_orientation(const PixelImage& stored, int orientation);

// Converts `count` pixels of 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels to 1 or 3
// channels, compositing alpha on black.
void convert_channels(const uint8_t* src, int src_channels, int64_t count, int dst_channels, uint8_t* dst);

// BT.601 luma of an RGB triple, rounded.
inline uint8_t luma_of(uint8_t r, uint8_t g, uint8_t b) {
  // 0.299, 0.587 and 0.114 in 16-bit fixed point; the three weights sum to exactly 65536.
  return static_cast<uint8_t>((19595u * r + 38470u * g + 7471u * b + 32768u) >> 16);
}

}  // namespace gt
