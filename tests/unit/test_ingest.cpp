// gantrain ingest: decoding of every PNG/JPEG kind, EXIF orientation, bad files, crop and resize, determinism, IDX.
// Every fixture is made here with libpng/libjpeg/zlib in a temporary folder; no binary file is committed.
#include <gtest/gtest.h>
#include <png.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

// jpeglib.h needs size_t and FILE declared first.
#include <jpeglib.h>

#include "common/test_util.h"
#include "core/error.h"
#include "data/dataset_h5.h"
#include "data/image_decode.h"
#include "data/ingest.h"
#include "data/resize.h"

namespace gt {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

// ---- fixtures ------------------------------------------------------------------------------------

using gt::test::TempDir;

void write_file(const std::string& path, const Bytes& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

Bytes random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (auto& v : b) v = static_cast<uint8_t>(rng() & 0xFF);
  return b;
}

// Smooth content survives JPEG almost unchanged, so lossy round trips can be compared tightly.
Bytes smooth_rgb(int w, int h) {
  Bytes p(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* q = &p[(static_cast<size_t>(y) * w + x) * 3];
      q[0] = static_cast<uint8_t>(40 + 160 * x / std::max(1, w - 1));
      q[1] = static_cast<uint8_t>(30 + 180 * y / std::max(1, h - 1));
      q[2] = static_cast<uint8_t>(128 + 60 * std::sin(0.2 * (x + y)));
    }
  return p;
}

// PNG writer: `samples` holds, per pixel, the channel values of `color_type` in stored units
// (0..2^depth-1; palette: the index). Rows are packed here, not by libpng transforms.
struct PngWrite {
  Bytes* out;
};
void append_png_bytes(png_structp png, png_bytep data, size_t n) {
  auto* w = static_cast<PngWrite*>(png_get_io_ptr(png));
  w->out->insert(w->out->end(), data, data + n);
}
void flush_nothing(png_structp) {}

int png_channels(int color_type) {
  switch (color_type) {
    case PNG_COLOR_TYPE_GRAY: return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA: return 2;
    case PNG_COLOR_TYPE_RGB: return 3;
    case PNG_COLOR_TYPE_RGBA: return 4;
    default: return 1;  // palette index
  }
}

Bytes pack_png_rows(int w, int h, int color_type, int depth, const std::vector<uint16_t>& samples) {
  const int per_pixel = png_channels(color_type);
  const size_t row_bytes = (static_cast<size_t>(w) * per_pixel * depth + 7) / 8;
  Bytes rows(row_bytes * h, 0);
  for (int y = 0; y < h; ++y) {
    uint8_t* row = &rows[row_bytes * y];
    for (int i = 0; i < w * per_pixel; ++i) {
      const uint16_t v = samples[static_cast<size_t>(y) * w * per_pixel + i];
      if (depth == 16) {
        row[2 * i] = static_cast<uint8_t>(v >> 8);
        row[2 * i + 1] = static_cast<uint8_t>(v & 0xFF);
      } else if (depth == 8) {
        row[i] = static_cast<uint8_t>(v);
      } else {
        const int bit = i * depth;
        row[bit / 8] |= static_cast<uint8_t>(v << (8 - depth - bit % 8));
      }
    }
  }
  return rows;
}

bool png_write_phase(png_structp png, png_infop info, int w, int h, int color_type, int depth, bool interlaced,
                     const png_color* palette, int palette_size, const uint8_t* palette_alpha, int alpha_size,
                     png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_IHDR(png, info, w, h, depth, color_type, interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (palette_size > 0) png_set_PLTE(png, info, palette, palette_size);
  if (alpha_size > 0) png_set_tRNS(png, info, palette_alpha, alpha_size, nullptr);
  png_write_info(png, info);
  png_write_image(png, rows);
  png_write_end(png, nullptr);
  return true;
}

Bytes encode_png(int w, int h, int color_type, int depth, const std::vector<uint16_t>& samples, bool interlaced = false,
                 const std::vector<png_color>& palette = {}, const Bytes& palette_alpha = {}) {
  Bytes out;
  PngWrite sink{&out};
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_set_write_fn(png, &sink, append_png_bytes, flush_nothing);
  Bytes packed = pack_png_rows(w, h, color_type, depth, samples);
  const size_t row_bytes = packed.size() / h;
  std::vector<png_bytep> rows(h);
  for (int y = 0; y < h; ++y) rows[y] = &packed[row_bytes * y];
  const bool ok = png_write_phase(png, info, w, h, color_type, depth, interlaced, palette.data(),
                                  static_cast<int>(palette.size()), palette_alpha.data(),
                                  static_cast<int>(palette_alpha.size()), rows.data());
  png_destroy_write_struct(&png, &info);
  EXPECT_TRUE(ok) << "libpng could not write the fixture";
  return out;
}

Bytes encode_png8(const Bytes& pixels, int w, int h, int channels) {
  static const int kType[] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGBA};
  return encode_png(w, h, kType[channels], 8, std::vector<uint16_t>(pixels.begin(), pixels.end()));
}

// JPEG writer (libjpeg's default error handler: a failure here is a bug in the test itself).
Bytes encode_jpeg(const Bytes& pixels, int w, int h, int components, J_COLOR_SPACE space, int quality,
                  const Bytes& app1 = {}) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = w;
  cinfo.image_height = h;
  cinfo.input_components = components;
  cinfo.in_color_space = space;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  for (int c = 0; c < cinfo.num_components; ++c) {  // 4:4:4, so sharp color edges survive
    cinfo.comp_info[c].h_samp_factor = 1;
    cinfo.comp_info[c].v_samp_factor = 1;
  }
  jpeg_start_compress(&cinfo, TRUE);
  if (!app1.empty()) jpeg_write_marker(&cinfo, JPEG_APP0 + 1, app1.data(), static_cast<unsigned>(app1.size()));
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(&pixels[static_cast<size_t>(cinfo.next_scanline) * w * components]);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  Bytes out(buffer, buffer + size);
  std::free(buffer);
  return out;
}

Bytes encode_jpeg_rgb(const Bytes& rgb, int w, int h, int quality = 95, const Bytes& app1 = {}) {
  return encode_jpeg(rgb, w, h, 3, JCS_RGB, quality, app1);
}

// An APP1 payload: "Exif\0\0", a TIFF header in the given byte order and IFD0 with a Make tag
// before the orientation tag (so the parser has to walk the entries).
Bytes exif_app1(int orientation, bool little_endian) {
  Bytes b = {'E', 'x', 'i', 'f', 0, 0};
  auto u16 = [&](unsigned v) {
    if (little_endian) {
      b.push_back(v & 0xFF);
      b.push_back((v >> 8) & 0xFF);
    } else {
      b.push_back((v >> 8) & 0xFF);
      b.push_back(v & 0xFF);
    }
  };
  auto u32 = [&](uint32_t v) {
    if (little_endian) {
      u16(v & 0xFFFF);
      u16(v >> 16);
    } else {
      u16(v >> 16);
      u16(v & 0xFFFF);
    }
  };
  b.push_back(little_endian ? 'I' : 'M');
  b.push_back(little_endian ? 'I' : 'M');
  u16(42);
  u32(8);  // IFD0 right after the 8-byte TIFF header
  u16(2);  // two entries
  u16(0x010F);  // Make, ASCII, 4 bytes inline
  u16(2);
  u32(4);
  b.insert(b.end(), {'g', 't', '!', 0});
  u16(0x0112);  // Orientation, SHORT, 1 value, left-justified in the 4-byte field
  u16(3);
  u32(1);
  u16(static_cast<unsigned>(orientation));
  u16(0);
  u32(0);  // no next IFD
  return b;
}

// Offset of the first SOF0 (baseline) marker of a JPEG.
size_t sof0_offset(const Bytes& jpeg) {
  for (size_t i = 2; i + 9 < jpeg.size(); ++i)
    if (jpeg[i] == 0xFF && jpeg[i + 1] == 0xC0) return i;
  ADD_FAILURE() << "no SOF0 marker";
  return 0;
}

void put_be32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}

void append_png_chunk(Bytes& png, const char* type, const Bytes& data) {
  put_be32(png, static_cast<uint32_t>(data.size()));
  const size_t type_at = png.size();
  png.insert(png.end(), type, type + 4);
  png.insert(png.end(), data.begin(), data.end());
  const uLong crc = crc32(0, &png[type_at], static_cast<uInt>(4 + data.size()));
  put_be32(png, static_cast<uint32_t>(crc));
}

// A valid-looking PNG whose header claims width x height RGB pixels (the IDAT holds next to nothing).
Bytes png_claiming(uint32_t width, uint32_t height) {
  Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  Bytes ihdr;
  put_be32(ihdr, width);
  put_be32(ihdr, height);
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});
  append_png_chunk(png, "IHDR", ihdr);
  append_png_chunk(png, "IDAT", {0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01});
  append_png_chunk(png, "IEND", {});
  return png;
}

DecodeResult decode(const Bytes& file, int channels) { return decode_image(file.data(), file.size(), channels); }

int max_abs_diff(const Bytes& a, const Bytes& b) {
  EXPECT_EQ(a.size(), b.size());
  int worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

double mean_abs_diff(const Bytes& a, const Bytes& b) {
  EXPECT_EQ(a.size(), b.size());
  double sum = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) sum += std::abs(a[i] - b[i]);
  return a.empty() ? 0 : sum / static_cast<double>(a.size());
}

uint8_t reference_luma(double r, double g, double b) {
  return static_cast<uint8_t>(std::lround(0.299 * r + 0.587 * g + 0.114 * b));
}

// ---- PNG color types and bit depths ------------------------------------------------------------

// The 8-bit RGBA a viewer shows for each pixel, before compositing, worked out from the PNG spec.
struct PngCase {
  const char* name;
  int color_type, depth;
  bool interlaced;
  bool with_trns;  // palette only: a tRNS chunk
};

class PngKinds : public ::testing::TestWithParam<PngCase> {};

TEST_P(PngKinds, DecodeToGrayAndRgbAsSpecified) {
  const PngCase c = GetParam();
  const int w = 13, h = 7;  // odd sizes exercise partial bytes and every Adam7 pass
  std::mt19937 rng(static_cast<uint32_t>(c.color_type * 100 + c.depth));
  const int per_pixel = png_channels(c.color_type);
  const uint32_t max_sample = (1u << c.depth) - 1;
  std::vector<uint16_t> samples(static_cast<size_t>(w) * h * per_pixel);
  std::vector<png_color> palette;
  Bytes palette_alpha;
  if (c.color_type == PNG_COLOR_TYPE_PALETTE) {
    const int entries = 1 << std::min(c.depth, 4);  // a few colors even for 8-bit indices
    for (int i = 0; i < entries; ++i)
      palette.push_back(png_color{static_cast<png_byte>(rng() & 0xFF), static_cast<png_byte>(rng() & 0xFF),
                                  static_cast<png_byte>(rng() & 0xFF)});
    if (c.with_trns)
      for (int i = 0; i < entries; ++i) palette_alpha.push_back(static_cast<uint8_t>(i == 0 ? 0 : rng() & 0xFF));
    for (auto& s : samples) s = static_cast<uint16_t>(rng() % entries);
  } else {
    for (auto& s : samples) {
      // 16-bit samples are multiples of 257, the exact images of 8-bit values, so any correct scaling agrees.
      s = c.depth == 16 ? static_cast<uint16_t>((rng() & 0xFF) * 257) : static_cast<uint16_t>(rng() % (max_sample + 1));
    }
  }
  const Bytes file = encode_png(w, h, c.color_type, c.depth, samples, c.interlaced, palette, palette_alpha);

  // Expected straight RGBA in 8 bits.
  Bytes rgba(static_cast<size_t>(w) * h * 4);
  for (int i = 0; i < w * h; ++i) {
    const uint16_t* s = &samples[static_cast<size_t>(i) * per_pixel];
    auto to8 = [&](uint16_t v) { return static_cast<uint8_t>(std::lround(v * 255.0 / max_sample)); };
    uint8_t* q = &rgba[static_cast<size_t>(i) * 4];
    switch (c.color_type) {
      case PNG_COLOR_TYPE_GRAY: q[0] = q[1] = q[2] = to8(s[0]); q[3] = 255; break;
      case PNG_COLOR_TYPE_GRAY_ALPHA: q[0] = q[1] = q[2] = to8(s[0]); q[3] = to8(s[1]); break;
      case PNG_COLOR_TYPE_RGB: q[0] = to8(s[0]); q[1] = to8(s[1]); q[2] = to8(s[2]); q[3] = 255; break;
      case PNG_COLOR_TYPE_RGBA: q[0] = to8(s[0]); q[1] = to8(s[1]); q[2] = to8(s[2]); q[3] = to8(s[3]); break;
      default:
        q[0] = palette[s[0]].red;
        q[1] = palette[s[0]].green;
        q[2] = palette[s[0]].blue;
        q[3] = s[0] < palette_alpha.size() ? palette_alpha[s[0]] : 255;
    }
  }
  Bytes expected_rgb(static_cast<size_t>(w) * h * 3), expected_gray(static_cast<size_t>(w) * h);
  for (int i = 0; i < w * h; ++i) {
    const uint8_t* q = &rgba[static_cast<size_t>(i) * 4];
    double composited[3];
    for (int k = 0; k < 3; ++k) {
      composited[k] = q[k] * (q[3] / 255.0);  // over black
      expected_rgb[static_cast<size_t>(i) * 3 + k] = static_cast<uint8_t>(std::lround(composited[k]));
    }
    expected_gray[i] = reference_luma(composited[0], composited[1], composited[2]);
  }

  const DecodeResult rgb = decode(file, 3);
  ASSERT_TRUE(rgb.ok()) << c.name << ": " << problem_name(rgb.problem) << " " << rgb.detail;
  EXPECT_EQ(rgb.image.width, w);
  EXPECT_EQ(rgb.image.height, h);
  EXPECT_EQ(rgb.image.channels, 3);
  EXPECT_EQ(max_abs_diff(rgb.image.pixels, expected_rgb), 0) << c.name;

  const DecodeResult gray = decode(file, 1);
  ASSERT_TRUE(gray.ok()) << c.name << ": " << gray.detail;
  EXPECT_EQ(gray.image.channels, 1);
  // Luma is computed in fixed point, alpha compositing rounds first: one level of slack.
  EXPECT_LE(max_abs_diff(gray.image.pixels, expected_gray), 1) << c.name;
}

INSTANTIATE_TEST_SUITE_P(
    AllColorTypes, PngKinds,
    ::testing::Values(PngCase{"gray1", PNG_COLOR_TYPE_GRAY, 1, false, false},
                      PngCase{"gray2", PNG_COLOR_TYPE_GRAY, 2, false, false},
                      PngCase{"gray4", PNG_COLOR_TYPE_GRAY, 4, false, false},
                      PngCase{"gray8", PNG_COLOR_TYPE_GRAY, 8, false, false},
                      PngCase{"gray16", PNG_COLOR_TYPE_GRAY, 16, false, false},
                      PngCase{"gray_alpha8", PNG_COLOR_TYPE_GRAY_ALPHA, 8, false, false},
                      PngCase{"gray_alpha16", PNG_COLOR_TYPE_GRAY_ALPHA, 16, false, false},
                      PngCase{"rgb8", PNG_COLOR_TYPE_RGB, 8, false, false},
                      PngCase{"rgb16", PNG_COLOR_TYPE_RGB, 16, false, false},
                      PngCase{"rgba8", PNG_COLOR_TYPE_RGBA, 8, false, false},
                      PngCase{"rgba16", PNG_COLOR_TYPE_RGBA, 16, false, false},
                      PngCase{"palette1", PNG_COLOR_TYPE_PALETTE, 1, false, false},
                      PngCase{"palette2", PNG_COLOR_TYPE_PALETTE, 2, false, false},
                      PngCase{"palette4", PNG_COLOR_TYPE_PALETTE, 4, false, true},
                      PngCase{"palette8", PNG_COLOR_TYPE_PALETTE, 8, false, false},
                      PngCase{"palette8_trns", PNG_COLOR_TYPE_PALETTE, 8, false, true},
                      PngCase{"interlaced_gray2", PNG_COLOR_TYPE_GRAY, 2, true, false},
                      PngCase{"interlaced_rgb8", PNG_COLOR_TYPE_RGB, 8, true, false},
                      PngCase{"interlaced_rgba16", PNG_COLOR_TYPE_RGBA, 16, true, false},
                      PngCase{"interlaced_palette4", PNG_COLOR_TYPE_PALETTE, 4, true, true}),
    [](const ::testing::TestParamInfo<PngCase>& info) { return std::string(info.param.name); });

TEST(PngDecode, SixteenBitSamplesRoundToNearestEightBit) {
  const int w = 64, h = 1;
  std::vector<uint16_t> samples(w);
  for (int i = 0; i < w; ++i) samples[i] = static_cast<uint16_t>(i * 1031 + 7);  // not multiples of 257
  const DecodeResult r = decode(encode_png(w, h, PNG_COLOR_TYPE_GRAY, 16, samples), 1);
  ASSERT_TRUE(r.ok()) << r.detail;
  for (int i = 0; i < w; ++i) EXPECT_NEAR(r.image.pixels[i], samples[i] / 257.0, 0.5 + 1e-9) << "sample " << samples[i];
}

TEST(PngDecode, MissingEndChunkAfterCompleteDataIsAccepted) {
  const Bytes rgb = random_bytes(9 * 5 * 3, 3);
  Bytes file = encode_png8(rgb, 9, 5, 3);
  file.resize(file.size() - 12);  // drop IEND (length, type, CRC)
  const DecodeResult r = decode(file, 3);
  ASSERT_TRUE(r.ok()) << r.detail;
  EXPECT_EQ(r.image.pixels, rgb);
}

// ---- JPEG --------------------------------------------------------------------------------------

TEST(JpegDecode, RgbRoundTripAndLuma) {
  const int w = 48, h = 32;
  const Bytes rgb = smooth_rgb(w, h);
  const Bytes file = encode_jpeg_rgb(rgb, w, h, 95);
  const DecodeResult r = decode(file, 3);
  ASSERT_TRUE(r.ok()) << r.detail;
  ASSERT_EQ(r.image.width, w);
  ASSERT_EQ(r.image.height, h);
  EXPECT_LT(mean_abs_diff(r.image.pixels, rgb), 2.0);
  EXPECT_LE(max_abs_diff(r.image.pixels, rgb), 16);

  Bytes luma(static_cast<size_t>(w) * h);
  for (int i = 0; i < w * h; ++i) luma[i] = reference_luma(rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]);
  const DecodeResult g = decode(file, 1);
  ASSERT_TRUE(g.ok()) << g.detail;
  EXPECT_EQ(g.image.channels, 1);
  EXPECT_LT(mean_abs_diff(g.image.pixels, luma), 1.5);
}

TEST(JpegDecode, GrayRepeatedOverRgb) {
  const int w = 40, h = 24;
  Bytes gray(static_cast<size_t>(w) * h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) gray[static_cast<size_t>(y) * w + x] = static_cast<uint8_t>(20 + 5 * x + 2 * y);
  const Bytes file = encode_jpeg(gray, w, h, 1, JCS_GRAYSCALE, 95);
  const DecodeResult g = decode(file, 1);
  ASSERT_TRUE(g.ok()) << g.detail;
  EXPECT_LT(mean_abs_diff(g.image.pixels, gray), 1.5);
  const DecodeResult rgb = decode(file, 3);
  ASSERT_TRUE(rgb.ok()) << rgb.detail;
  for (int i = 0; i < w * h; ++i) {
    EXPECT_EQ(rgb.image.pixels[3 * i], g.image.pixels[i]);
    EXPECT_EQ(rgb.image.pixels[3 * i + 1], g.image.pixels[i]);
    EXPECT_EQ(rgb.image.pixels[3 * i + 2], g.image.pixels[i]);
  }
}

TEST(JpegDecode, AdobeCmykBecomesRgb) {
  // Adobe CMYK JPEGs store 255 - ink; libjpeg writes the Adobe marker for CMYK input.
  const int w = 16, h = 16;
  const uint8_t inks[4][4] = {{0, 0, 0, 0}, {255, 0, 0, 0}, {0, 128, 255, 0}, {0, 0, 0, 100}};  // c, m, y, k
  Bytes stored(static_cast<size_t>(w) * h * 4), expected(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const uint8_t* ink = inks[(y / 8) * 2 + x / 8];
      const size_t i = static_cast<size_t>(y) * w + x;
      for (int k = 0; k < 4; ++k) stored[4 * i + k] = static_cast<uint8_t>(255 - ink[k]);
      for (int k = 0; k < 3; ++k) expected[3 * i + k] = static_cast<uint8_t>(std::lround((255 - ink[k]) * (255 - ink[3]) / 255.0));
    }
  const DecodeResult r = decode(encode_jpeg(stored, w, h, 4, JCS_CMYK, 100), 3);
  ASSERT_TRUE(r.ok()) << r.detail;
  EXPECT_LE(max_abs_diff(r.image.pixels, expected), 4);
}

// ---- EXIF orientation ----------------------------------------------------------------------------

PixelImage mirror_left_right(const PixelImage& a) {
  PixelImage b = a;
  for (int y = 0; y < a.height; ++y)
    for (int x = 0; x < a.width; ++x)
      for (int c = 0; c < a.channels; ++c)
        b.pixels[(static_cast<size_t>(y) * a.width + x) * a.channels + c] =
            a.pixels[(static_cast<size_t>(y) * a.width + (a.width - 1 - x)) * a.channels + c];
  return b;
}

PixelImage rotate_clockwise(const PixelImage& a) {
  PixelImage b{a.width, a.height, a.channels, Bytes(a.pixels.size())};
  for (int y = 0; y < a.height; ++y)
    for (int x = 0; x < a.width; ++x)
      for (int c = 0; c < a.channels; ++c)  // the source's left column becomes the top row
        b.pixels[(static_cast<size_t>(x) * b.width + (a.height - 1 - y)) * a.channels + c] =
            a.pixels[(static_cast<size_t>(y) * a.width + x) * a.channels + c];
  return b;
}

PixelImage rotate_clockwise(const PixelImage& a, int quarter_turns) {
  PixelImage b = a;
  for (int i = 0; i < quarter_turns; ++i) b = rotate_clockwise(b);
  return b;
}

// What a viewer does to the stored image for each tag value (the EXIF 2.3 table as ExifTool words it).
PixelImage as_displayed(const PixelImage& stored, int orientation) {
  switch (orientation) {
    case 2: return mirror_left_right(stored);                        // mirror horizontal
    case 3: return rotate_clockwise(stored, 2);                      // rotate 180
    case 4: return mirror_left_right(rotate_clockwise(stored, 2));   // mirror vertical
    case 5: return rotate_clockwise(mirror_left_right(stored), 3);   // mirror horizontal, rotate 270 CW
    case 6: return rotate_clockwise(stored, 1);                      // rotate 90 CW
    case 7: return rotate_clockwise(mirror_left_right(stored), 1);   // mirror horizontal, rotate 90 CW
    case 8: return rotate_clockwise(stored, 3);                      // rotate 270 CW
    default: return stored;
  }
}

// 16 wide, 24 high, six flat 8x8 blocks of different colors: no symmetry, and JPEG keeps flat blocks.
PixelImage asymmetric_blocks() {
  const uint8_t colors[6][3] = {{250, 20, 20}, {20, 250, 20}, {20, 20, 250}, {240, 240, 30}, {30, 230, 230}, {128, 128, 128}};
  PixelImage img{24, 16, 3, Bytes(24 * 16 * 3)};
  for (int y = 0; y < 24; ++y)
    for (int x = 0; x < 16; ++x)
      for (int c = 0; c < 3; ++c) img.pixels[(static_cast<size_t>(y) * 16 + x) * 3 + c] = colors[(y / 8) * 2 + x / 8][c];
  return img;
}

TEST(ExifOrientation, AllEightInBothByteOrders) {
  const PixelImage stored = asymmetric_blocks();
  for (bool little : {true, false}) {
    for (int orientation = 1; orientation <= 8; ++orientation) {
      const Bytes app1 = exif_app1(orientation, little);
      EXPECT_EQ(exif_orientation(app1.data(), app1.size()), orientation);
      const Bytes file = encode_jpeg_rgb(stored.pixels, stored.width, stored.height, 100, app1);
      const DecodeResult r = decode(file, 3);
      ASSERT_TRUE(r.ok()) << r.detail;
      const PixelImage expected = as_displayed(stored, orientation);
      ASSERT_EQ(r.image.height, expected.height) << "orientation " << orientation;
      ASSERT_EQ(r.image.width, expected.width) << "orientation " << orientation;
      EXPECT_LT(mean_abs_diff(r.image.pixels, expected.pixels), 3.0)
          << "orientation " << orientation << (little ? " (II)" : " (MM)");
    }
  }
}

TEST(ExifOrientation, MalformedSegmentsMeanUpright) {
  const Bytes good = exif_app1(6, true);
  for (size_t cut = 0; cut < good.size(); ++cut)  // every truncation, including inside the orientation value
    EXPECT_EQ(exif_orientation(good.data(), cut), cut >= good.size() - 6 ? 6 : 1) << "cut at " << cut;
  Bytes bad_value = exif_app1(9, false);
  EXPECT_EQ(exif_orientation(bad_value.data(), bad_value.size()), 1);
  Bytes far_ifd = good;
  far_ifd[6 + 4] = 0xF0;  // IFD0 offset far beyond the segment
  far_ifd[6 + 7] = 0x7F;
  EXPECT_EQ(exif_orientation(far_ifd.data(), far_ifd.size()), 1);
  Bytes many_entries = good;
  many_entries[6 + 8] = 0xFF;  // claims 65535 entries
  many_entries[6 + 9] = 0xFF;
  EXPECT_EQ(exif_orientation(many_entries.data(), many_entries.size()), 6);  // found before the claimed end
  Bytes wrong_type = good;
  wrong_type[6 + 8 + 2 + 12 + 2] = 4;  // orientation stored as LONG
  EXPECT_EQ(exif_orientation(wrong_type.data(), wrong_type.size()), 1);
  const Bytes not_exif = {'h', 't', 't', 'p', ':', '/', '/', 'n', 's', '.', 'a', 'd', 'o', 'b', 'e'};
  EXPECT_EQ(exif_orientation(not_exif.data(), not_exif.size()), 1);
}

// ---- bad files -------------------------------------------------------------------------------------

struct BadFile {
  const char* name;
  Bytes bytes;
  ImageProblem problem;
};

std::vector<BadFile> bad_files() {
  const Bytes rgb = random_bytes(64 * 64 * 3, 11);
  const Bytes jpeg = encode_jpeg_rgb(rgb, 64, 64, 90);
  const Bytes png = encode_png8(rgb, 64, 64, 3);
  Bytes corrupt_jpeg = jpeg;
  corrupt_jpeg[sof0_offset(jpeg) + 4] = 3;  // sample precision 3 bits: no such JPEG
  Bytes huge_jpeg = jpeg;
  const size_t sof = sof0_offset(jpeg);
  for (size_t at : {sof + 5, sof + 7}) {  // height, then width: 60000 = 0xEA60
    huge_jpeg[at] = 0xEA;
    huge_jpeg[at + 1] = 0x60;
  }
  Bytes corrupt_png = png;
  corrupt_png[33 + 8 + 20] ^= 0xFF;  // a byte inside the IDAT data: its CRC no longer matches
  const std::string text = "this is not a picture\n";
  return {
      {"corrupt.jpg", corrupt_jpeg, ImageProblem::corrupt},
      {"truncated.jpg", Bytes(jpeg.begin(), jpeg.begin() + static_cast<long>(jpeg.size() * 6 / 10)), ImageProblem::truncated},
      {"truncated.png", Bytes(png.begin(), png.begin() + static_cast<long>(png.size() / 2)), ImageProblem::truncated},
      {"corrupt.png", corrupt_png, ImageProblem::corrupt},
      {"notes.jpg", Bytes(text.begin(), text.end()), ImageProblem::not_an_image},
      {"anim.png", Bytes{'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0}, ImageProblem::not_an_image},
      {"empty.png", Bytes{}, ImageProblem::empty},
      {"huge.png", png_claiming(60000, 60000), ImageProblem::too_large},
      {"huge.jpg", huge_jpeg, ImageProblem::too_large},
  };
}

TEST(DecodeImage, EveryBadFileKindIsReportedNotFatal) {
  for (const BadFile& f : bad_files()) {
    for (int channels : {1, 3}) {
      const DecodeResult r = decode(f.bytes, channels);
      EXPECT_EQ(r.problem, f.problem) << f.name << ": got " << problem_name(r.problem) << " (" << r.detail << ")";
      EXPECT_FALSE(r.detail.empty()) << f.name;
      EXPECT_TRUE(r.image.pixels.empty()) << f.name;
    }
  }
}

TEST(DecodeImage, PixelLimitIsCheckedFromTheHeader) {
  const Bytes rgb = random_bytes(30 * 20 * 3, 5);
  for (const Bytes& file : {encode_png8(rgb, 30, 20, 3), encode_jpeg_rgb(rgb, 30, 20)}) {
    EXPECT_EQ(decode_image(file.data(), file.size(), 3, 599).problem, ImageProblem::too_large);
    EXPECT_TRUE(decode_image(file.data(), file.size(), 3, 600).ok());
  }
}

// ---- crop and resize -------------------------------------------------------------------------------

// Direct 2-D evaluation of a stretched triangle filter, in double precision, one output pixel at a time.
Bytes naive_resize(const Bytes& src, int src_w, int channels, CropBox box, int out_h, int out_w) {
  auto weight = [](double distance, double support) { return std::max(0.0, 1.0 - std::abs(distance) / support); };
  const double sy = static_cast<double>(box.h) / out_h, sx = static_cast<double>(box.w) / out_w;
  const double support_y = std::max(1.0, sy), support_x = std::max(1.0, sx);
  Bytes out(static_cast<size_t>(out_h) * out_w * channels);
  for (int oy = 0; oy < out_h; ++oy)
    for (int ox = 0; ox < out_w; ++ox)
      for (int c = 0; c < channels; ++c) {
        double sum = 0, total = 0;
        for (int y = 0; y < box.h; ++y)
          for (int x = 0; x < box.w; ++x) {
            const double w = weight(y + 0.5 - (oy + 0.5) * sy, support_y) * weight(x + 0.5 - (ox + 0.5) * sx, support_x);
            sum += w * src[((static_cast<size_t>(box.y + y)) * src_w + box.x + x) * channels + c];
            total += w;
          }
        out[(static_cast<size_t>(oy) * out_w + ox) * channels + c] = static_cast<uint8_t>(std::lround(sum / total));
      }
  return out;
}

TEST(Resize, MatchesNaiveTriangleFilter) {
  struct Case {
    int src_h, src_w, channels;
    CropBox box;
    int out_h, out_w;
  };
  const Case cases[] = {
      {53, 37, 1, {0, 0, 37, 53}, 16, 16},   // shrink by non-integer factors
      {64, 64, 3, {0, 0, 64, 64}, 16, 16},   // shrink by 4
      {40, 60, 3, {10, 0, 40, 40}, 7, 7},    // crop, then shrink
      {9, 7, 3, {0, 0, 7, 9}, 20, 20},       // enlarge
      {50, 10, 1, {0, 0, 10, 50}, 16, 16},   // shrink one axis, enlarge the other
      {218, 178, 3, {25, 50, 128, 128}, 64, 64},  // the CelebA crop
  };
  for (const Case& c : cases) {
    const Bytes src = random_bytes(static_cast<size_t>(c.src_h) * c.src_w * c.channels, c.src_h * 7 + c.out_w);
    Bytes out(static_cast<size_t>(c.out_h) * c.out_w * c.channels);
    resize_box(src.data(), c.src_h, c.src_w, c.channels, c.box, c.out_h, c.out_w, out.data());
    EXPECT_LE(max_abs_diff(out, naive_resize(src, c.src_w, c.channels, c.box, c.out_h, c.out_w)), 1)
        << c.src_h << "x" << c.src_w << " -> " << c.out_h << "x" << c.out_w;
  }
}

TEST(Resize, EnlargingIsBilinearWithEdgesRepeated) {
  const int in_h = 5, in_w = 6, out_h = 13, out_w = 17;
  const Bytes src = random_bytes(in_h * in_w, 17);
  Bytes out(out_h * out_w);
  resize_box(src.data(), in_h, in_w, 1, CropBox{0, 0, in_w, in_h}, out_h, out_w, out.data());
  auto at = [&](int y, int x) { return static_cast<double>(src[static_cast<size_t>(y) * in_w + x]); };
  for (int oy = 0; oy < out_h; ++oy)
    for (int ox = 0; ox < out_w; ++ox) {
      const double fy = std::clamp((oy + 0.5) * in_h / out_h - 0.5, 0.0, in_h - 1.0);
      const double fx = std::clamp((ox + 0.5) * in_w / out_w - 0.5, 0.0, in_w - 1.0);
      const int y0 = static_cast<int>(fy), x0 = static_cast<int>(fx);
      const int y1 = std::min(y0 + 1, in_h - 1), x1 = std::min(x0 + 1, in_w - 1);
      const double ty = fy - y0, tx = fx - x0;
      const double v = (1 - ty) * ((1 - tx) * at(y0, x0) + tx * at(y0, x1)) + ty * ((1 - tx) * at(y1, x0) + tx * at(y1, x1));
      EXPECT_NEAR(out[static_cast<size_t>(oy) * out_w + ox], v, 0.5 + 1e-3) << oy << "," << ox;
    }
}

TEST(Resize, ConstantStaysConstantAndSameSizeIsACopy) {
  const Bytes flat(31 * 23 * 3, 173);
  Bytes out(8 * 8 * 3);
  resize_box(flat.data(), 31, 23, 3, CropBox{0, 0, 23, 31}, 8, 8, out.data());
  EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](uint8_t v) { return v == 173; }));
  const Bytes src = random_bytes(20 * 30 * 3, 23);
  Bytes crop(10 * 12 * 3);
  resize_box(src.data(), 20, 30, 3, CropBox{5, 4, 12, 10}, 10, 12, crop.data());
  for (int y = 0; y < 10; ++y)
    for (int x = 0; x < 12 * 3; ++x) ASSERT_EQ(crop[y * 36 + x], src[(y + 4) * 90 + 15 + x]);
}

TEST(Resize, CenterSquare) {
  const CropBox wide = center_square(100, 161);
  EXPECT_EQ(wide.w, 100);
  EXPECT_EQ(wide.h, 100);
  EXPECT_EQ(wide.y, 0);
  EXPECT_EQ(wide.x, 30);  // 61 spare columns: 30 left, 31 right
  const CropBox tall = center_square(218, 178);
  EXPECT_EQ(tall.x, 0);
  EXPECT_EQ(tall.y, 20);
  EXPECT_EQ(tall.w, 178);
}

TEST(ParseCrop, AcceptsCenterAndBoxesRejectsTheRest) {
  EXPECT_TRUE(parse_crop("center").center);
  const CropSpec c = parse_crop("25,50,128,128");
  EXPECT_FALSE(c.center);
  EXPECT_EQ(c.box.x, 25);
  EXPECT_EQ(c.box.y, 50);
  EXPECT_EQ(c.box.w, 128);
  EXPECT_EQ(c.box.h, 128);
  for (const char* bad : {"", "middle", "1,2,3", "1,2,3,4,5", "1,2,0,4", "-1,2,3,4", "1,2,3,x", "1, 2,3,4"}) {
    try {
      parse_crop(bad);
      ADD_FAILURE() << "accepted --crop '" << bad << "'";
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find("--crop"), std::string::npos) << e.what();
    }
  }
}

// ---- ingest end to end -------------------------------------------------------------------------------

IngestOptions options_for(const std::string& from, const std::string& out, int size, int channels = 3) {
  IngestOptions o;
  o.from = from;
  o.out = out;
  o.size = size;
  o.channels = channels;
  o.threads = 2;
  o.progress = ProgressStyle::none;
  return o;
}

Bytes read_all_images(const std::string& path, DatasetInfo* info = nullptr) {
  DatasetReader reader = DatasetReader::open(path);
  Bytes images(reader.info().sample_bytes() * reader.size());
  reader.read_range(0, reader.size(), images.data());
  if (info) *info = reader.info();
  return images;
}

std::string user_error_of(const IngestOptions& o) {
  try {
    ingest(o);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no UserError)";
}

TEST(Ingest, SortedOrderSkipsBadFilesAndIgnoresOthers) {
  TempDir tmp;
  const std::string root = tmp / "images";
  // Flat colors, one per file, so the output order can be read off the pixels.
  auto flat_png = [](uint8_t v) { return encode_png8(Bytes(20 * 30 * 3, v), 30, 20, 3); };
  write_file(root + "/b/x.png", flat_png(40));
  write_file(root + "/a.png", flat_png(20));
  write_file(root + "/B.PNG", flat_png(10));
  write_file(root + "/a/z.Jpeg", encode_jpeg_rgb(Bytes(16 * 16 * 3, 30), 16, 16, 100));
  write_file(root + "/README.txt", Bytes{'h', 'i'});
  write_file(root + "/b/labels.csv", Bytes{'1'});
  for (const BadFile& f : bad_files()) write_file(root + "/bad/" + f.name, f.bytes);

  int64_t ignored = -1;
  const std::vector<std::string> found = find_image_files(root, &ignored);
  EXPECT_EQ(ignored, 2);
  EXPECT_EQ(found.size(), 4 + bad_files().size());

  const std::string out = tmp / "out.h5";
  const IngestReport report = ingest(options_for(root, out, 8));
  EXPECT_EQ(report.written, 4);
  EXPECT_EQ(report.ignored, 2);
  ASSERT_EQ(report.skipped.size(), bad_files().size());
  for (const BadFile& f : bad_files()) {
    auto it = std::find_if(report.skipped.begin(), report.skipped.end(),
                           [&](const SkippedFile& s) { return s.path == std::string("bad/") + f.name; });
    ASSERT_NE(it, report.skipped.end()) << f.name << " not in the report";
    EXPECT_EQ(it->problem, f.problem) << f.name;
  }
  const std::string text = format_report(report);
  EXPECT_NE(text.find("bad/huge.png: too large"), std::string::npos) << text;
  EXPECT_NE(text.find("ignored 2 files"), std::string::npos) << text;

  DatasetInfo info;
  const Bytes images = read_all_images(out, &info);
  ASSERT_EQ(info.count, 4);
  EXPECT_EQ(info.height, 8);
  EXPECT_EQ(info.channels, 3);
  EXPECT_FALSE(info.has_labels);
  EXPECT_NE(info.source.find("folder"), std::string::npos);
  // Bytewise order of relative paths: "B.PNG" < "a.png" < "a/z.Jpeg" ('.' < '/') < "b/x.png".
  const int expected_value[4] = {10, 20, 30, 40};
  for (int i = 0; i < 4; ++i) {
    const uint8_t* first = &images[info.sample_bytes() * i];
    for (size_t k = 0; k < info.sample_bytes(); ++k) ASSERT_NEAR(first[k], expected_value[i], 1) << "image " << i;
  }
  EXPECT_FALSE(fs::exists(out + ".tmp"));
}

TEST(Ingest, SameTreeTwiceGivesIdenticalImagesWhateverTheThreads) {
  TempDir tmp;
  const std::string root = tmp / "tree";
  for (int i = 0; i < 40; ++i) {
    const int w = 20 + i % 7, h = 18 + i % 5;
    const Bytes rgb = random_bytes(static_cast<size_t>(w) * h * 3, 100 + i);
    const std::string name = fmt::format("{}/img{:02}", i % 3 == 0 ? "s1" : "s2", (i * 17) % 40);
    write_file(root + "/" + name + (i % 2 ? ".png" : ".jpg"), i % 2 ? encode_png8(rgb, w, h, 3) : encode_jpeg_rgb(rgb, w, h));
  }
  IngestOptions one = options_for(root, tmp / "one.h5", 12);
  one.threads = 1;
  IngestOptions many = options_for(root, tmp / "many.h5", 12);
  many.threads = 7;
  ingest(one);
  ingest(many);
  const Bytes a = read_all_images(one.out), b = read_all_images(many.out);
  EXPECT_EQ(a.size(), 40u * 12 * 12 * 3);
  EXPECT_EQ(a, b);
}

TEST(Ingest, CropBoxSelectsTheFace) {
  TempDir tmp;
  const int w = 178, h = 218;  // CelebA's aligned images
  const Bytes rgb = random_bytes(static_cast<size_t>(w) * h * 3, 42);
  write_file(tmp / "faces/000001.png", encode_png8(rgb, w, h, 3));
  write_file(tmp / "faces/small.png", encode_png8(Bytes(100 * 100 * 3, 0), 100, 100, 3));
  IngestOptions o = options_for(tmp / "faces", tmp / "faces.h5", 64);
  o.crop = "25,50,128,128";
  const IngestReport report = ingest(o);
  ASSERT_EQ(report.written, 1);
  ASSERT_EQ(report.skipped.size(), 1u);
  EXPECT_EQ(report.skipped[0].path, "small.png");
  EXPECT_EQ(report.skipped[0].problem, ImageProblem::too_small);
  const Bytes got = read_all_images(o.out);
  EXPECT_LE(max_abs_diff(got, naive_resize(rgb, w, 3, CropBox{25, 50, 128, 128}, 64, 64)), 1);

  o.out = tmp / "center.h5";
  o.crop = "center";
  ingest(o);  // both images now: small.png fits a center crop
  const Bytes both = read_all_images(o.out);
  ASSERT_EQ(both.size(), 2u * 64 * 64 * 3);
  const Bytes face(both.begin(), both.begin() + 64 * 64 * 3);  // "000001.png" sorts first
  EXPECT_LE(max_abs_diff(face, naive_resize(rgb, w, 3, CropBox{0, 20, 178, 178}, 64, 64)), 1);
}

TEST(Ingest, AlphaAndGrayBecomeTheRequestedChannels) {
  TempDir tmp;
  // One RGBA pixel pattern: opaque red, half-transparent white, fully transparent green.
  const Bytes rgba = {255, 0, 0, 255, 255, 255, 255, 128, 0, 255, 0, 0};
  write_file(tmp / "in/rgba.png", encode_png(3, 1, PNG_COLOR_TYPE_RGBA, 8, std::vector<uint16_t>(rgba.begin(), rgba.end())));
  IngestOptions o = options_for(tmp / "in", tmp / "gray.h5", 4, 1);
  o.crop = "0,0,1,1";  // just the red pixel, enlarged
  ingest(o);
  const Bytes red = read_all_images(o.out);
  EXPECT_TRUE(std::all_of(red.begin(), red.end(), [](uint8_t v) { return std::abs(v - 76) <= 1; }))  // 0.299 * 255
      << int(red[0]);
  o.out = tmp / "rgb.h5";
  o.channels = 3;
  o.crop = "2,0,1,1";  // the transparent pixel: black after compositing
  ingest(o);
  const Bytes black = read_all_images(o.out);
  EXPECT_TRUE(std::all_of(black.begin(), black.end(), [](uint8_t v) { return v == 0; }));
}

void write_idx(const std::string& path, uint32_t magic, const std::vector<uint32_t>& dims, const Bytes& data) {
  Bytes b;
  put_be32(b, magic);
  for (uint32_t d : dims) put_be32(b, d);
  b.insert(b.end(), data.begin(), data.end());
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, b.data(), static_cast<unsigned>(b.size())), static_cast<int>(b.size()));
  gzclose(f);
}

TEST(Ingest, FashionMnistIdxWithLabels) {
  TempDir tmp;
  const int n = 37;
  const Bytes pixels = random_bytes(static_cast<size_t>(n) * 28 * 28, 8);
  Bytes labels(n);
  for (int i = 0; i < n; ++i) labels[i] = static_cast<uint8_t>((i * 7) % 10);
  write_idx(tmp / "train-images-idx3-ubyte.gz", 0x803, {static_cast<uint32_t>(n), 28, 28}, pixels);
  write_idx(tmp / "train-labels-idx1-ubyte.gz", 0x801, {static_cast<uint32_t>(n)}, labels);

  IngestOptions o = options_for("fashion-mnist:" + tmp.path().string(), tmp / "fm.h5", 28, 0);
  const IngestReport report = ingest(o);
  EXPECT_EQ(report.written, n);
  EXPECT_EQ(report.channels, 1);  // the source's own
  DatasetInfo info;
  EXPECT_EQ(read_all_images(o.out, &info), pixels);  // 28 -> 28 and a square: untouched
  ASSERT_TRUE(info.has_labels);
  DatasetReader reader = DatasetReader::open(o.out);
  std::vector<int64_t> all(n), got(n);
  for (int i = 0; i < n; ++i) all[i] = i;
  reader.read_labels(all, got.data());
  for (int i = 0; i < n; ++i) EXPECT_EQ(got[i], labels[i]) << i;

  o.out = tmp / "fm_rgb.h5";
  o.channels = 3;
  ingest(o);
  const Bytes rgb = read_all_images(o.out);
  ASSERT_EQ(rgb.size(), pixels.size() * 3);
  for (size_t i = 0; i < pixels.size(); ++i)
    ASSERT_TRUE(rgb[3 * i] == pixels[i] && rgb[3 * i + 1] == pixels[i] && rgb[3 * i + 2] == pixels[i]) << i;

  fs::remove(tmp / "train-labels-idx1-ubyte.gz");
  o.out = tmp / "nolabels.h5";
  EXPECT_NE(user_error_of(o).find("train-labels-idx1-ubyte"), std::string::npos);
  EXPECT_FALSE(fs::exists(o.out));
}

TEST(Ingest, NothingValidIsAUserErrorNamingTheFolderAndWritesNothing) {
  TempDir tmp;
  fs::create_directories(tmp / "empty/sub");
  write_file(tmp / "empty/notes.txt", Bytes{'x'});
  const std::string out = tmp / "out.h5";
  std::string message = user_error_of(options_for(tmp / "empty", out, 16));
  EXPECT_NE(message.find(tmp / "empty"), std::string::npos) << message;
  EXPECT_NE(message.find("1 other files ignored"), std::string::npos) << message;

  for (const BadFile& f : bad_files()) write_file(tmp / "bad/" + f.name, f.bytes);
  message = user_error_of(options_for(tmp / "bad", out, 16));
  EXPECT_NE(message.find(tmp / "bad"), std::string::npos) << message;
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out + ".tmp"));
}

TEST(Ingest, BadOptionsNameWhatIsWrong) {
  TempDir tmp;
  write_file(tmp / "in/a.png", encode_png8(Bytes(8 * 8 * 3, 1), 8, 8, 3));
  const std::string out = tmp / "out.h5";
  struct Case {
    IngestOptions options;
    std::string must_mention;
  };
  std::vector<Case> cases;
  auto with = [&](auto change, std::string mention) {
    IngestOptions o = options_for(tmp / "in", out, 16);
    change(o);
    cases.push_back({o, std::move(mention)});
  };
  with([](IngestOptions& o) { o.size = 0; }, "--size 0");
  with([](IngestOptions& o) { o.size = kMaxIngestSize + 1; }, "--size");
  with([](IngestOptions& o) { o.channels = 2; }, "--channels 2");
  with([](IngestOptions& o) { o.threads = -1; }, "--threads");
  with([](IngestOptions& o) { o.crop = "1,2"; }, "--crop 1,2");
  with([&](IngestOptions& o) { o.from = tmp / "no_such_folder"; }, "no_such_folder");
  with([&](IngestOptions& o) { o.from = tmp / "in/a.png"; }, "not a folder");
  with([&](IngestOptions& o) { o.out = tmp / "missing_dir/out.h5"; }, "missing_dir");
  with([&](IngestOptions& o) { o.out = tmp / "in"; }, "is a folder");
  with([&](IngestOptions& o) { o.from = "fashion-mnist:" + (tmp / "no_idx_here"); }, "no_idx_here");
  for (const Case& c : cases) {
    const std::string message = user_error_of(c.options);
    EXPECT_NE(message.find(c.must_mention), std::string::npos) << "expected '" << c.must_mention << "' in: " << message;
  }
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace gt
