// JPEG and PNG decoding for ingest. libjpeg and libpng report errors by calling a handler that must not
// return; ours longjmp back, so no library failure can exit() the process or unwind through C frames.
#include "data/image_decode.h"

#include <csetjmp>
#include <cstdio>
#include <cstring>

// jpeglib.h needs size_t and FILE declared before it.
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#include "core/error.h"

namespace gt {

const char* problem_name(ImageProblem problem) {
  switch (problem) {
    case ImageProblem::none: return "ok";
    case ImageProblem::empty: return "empty";
    case ImageProblem::not_an_image: return "not an image";
    case ImageProblem::truncated: return "truncated";
    case ImageProblem::corrupt: return "corrupt";
    case ImageProblem::too_large: return "too large";
    case ImageProblem::too_small: return "smaller than the crop box";
    case ImageProblem::unreadable: return "unreadable";
  }
  return "unknown";
}

namespace {

DecodeResult failure(ImageProblem problem, std::string detail) {
  DecodeResult r;
  r.problem = problem;
  r.detail = std::move(detail);
  return r;
}

std::string too_large_detail(int64_t width, int64_t height, int64_t max_pixels) {
  return fmt::format("{}x{} = {} pixels, above the limit of {} pixels", width, height, width * height, max_pixels);
}

// Names formats we recognize but do not read, so the report says "a GIF file" rather than just "not an image".
std::string describe_non_image(const uint8_t* d, size_t n) {
  auto starts = [&](const char* magic, size_t len, size_t at = 0) {
    return n >= at + len && std::memcmp(d + at, magic, len) == 0;
  };
  if (starts("GIF8", 4)) return "a GIF file (only JPEG and PNG are read)";
  if (starts("BM", 2)) return "a BMP file (only JPEG and PNG are read)";
  if (starts("RIFF", 4) && starts("WEBP", 4, 8)) return "a WebP file (only JPEG and PNG are read)";
  if (starts("II*\0", 4) || starts("MM\0*", 4)) return "a TIFF file (only JPEG and PNG are read)";
  return "no JPEG or PNG signature at the start of the file";
}

// ---- JPEG --------------------------------------------------------------------------------------

struct JpegErrors {
  jpeg_error_mgr base;  // first member: libjpeg hands the handlers a pointer to it
  std::jmp_buf jump;
  ImageProblem problem;
  bool all_rows_read;  // after this, a missing end marker is harmless
  char message[JMSG_LENGTH_MAX];
};

void on_jpeg_error(j_common_ptr cinfo) {
  auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
  if (errors->problem == ImageProblem::none) errors->problem = ImageProblem::corrupt;
  cinfo->err->format_message(cinfo, errors->message);
  std::longjmp(errors->jump, 1);
}

bool is_data_corruption_warning(int code) {
  switch (code) {
    case JWRN_BOGUS_PROGRESSION:
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_MUST_RESYNC:
    case JWRN_NOT_SEQUENTIAL:
    case JWRN_TOO_MUCH_DATA:
      return true;
    default:  // JWRN_EXTRANEOUS_DATA, JWRN_ADOBE_XFORM, JWRN_JFIF_MAJOR, JWRN_BOGUS_ICC: the pixels are fine
      return false;
  }
}

// Warnings: libjpeg would patch over missing or damaged data with gray; we refuse such images instead.
void on_jpeg_message(j_common_ptr cinfo, int level) {
  if (level >= 0) return;  // trace messages
  auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
  const int code = cinfo->err->msg_code;
  if (code == JWRN_JPEG_EOF && errors->all_rows_read) return;
  const bool fatal = code == JWRN_JPEG_EOF || is_data_corruption_warning(code);
  if (!fatal) return;
  errors->problem = code == JWRN_JPEG_EOF ? ImageProblem::truncated : ImageProblem::corrupt;
  cinfo->err->format_message(cinfo, errors->message);
  std::longjmp(errors->jump, 1);
}

// The two functions below call setjmp and then only C code, so a longjmp skips no C++ destructor.
bool jpeg_read_header_phase(jpeg_decompress_struct* cinfo, JpegErrors* errors, const uint8_t* data, size_t size,
                            int channels) {
  if (setjmp(errors->jump)) return false;
  jpeg_create_decompress(cinfo);
  jpeg_mem_src(cinfo, data, static_cast<unsigned long>(size));
  jpeg_save_markers(cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(cinfo, TRUE);
  if (cinfo->jpeg_color_space == JCS_CMYK || cinfo->jpeg_color_space == JCS_YCCK) {
    cinfo->out_color_space = JCS_CMYK;
  } else {
    cinfo->out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  }
  jpeg_calc_output_dimensions(cinfo);
  return true;
}

bool jpeg_decode_phase(jpeg_decompress_struct* cinfo, JpegErrors* errors, uint8_t* out, size_t row_bytes) {
  if (setjmp(errors->jump)) return false;
  jpeg_start_decompress(cinfo);
  while (cinfo->output_scanline < cinfo->output_height) {
    JSAMPROW row = out + static_cast<size_t>(cinfo->output_scanline) * row_bytes;
    jpeg_read_scanlines(cinfo, &row, 1);
  }
  errors->all_rows_read = true;
  jpeg_finish_decompress(cinfo);
  return true;
}

// Adobe's CMYK JPEGs (those with an APP14 marker) store inverted samples.
void cmyk_to_rgb(const uint8_t* cmyk, int64_t count, bool inverted, uint8_t* rgb) {
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* p = cmyk + 4 * i;
    const unsigned k = inverted ? p[3] : 255u - p[3];
    for (int c = 0; c < 3; ++c) {
      const unsigned ink = inverted ? p[c] : 255u - p[c];
      rgb[3 * i + c] = static_cast<uint8_t>((ink * k + 127u) / 255u);
    }
  }
}

int orientation_of(const jpeg_decompress_struct& cinfo) {
  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m != nullptr; m = m->next) {
    if (m->marker != JPEG_APP0 + 1) continue;
    if (m->data_length >= 6 && std::memcmp(m->data, "Exif\0\0", 6) == 0) return exif_orientation(m->data, m->data_length);
  }
  return 1;
}

DecodeResult decode_jpeg(const uint8_t* data, size_t size, int channels, int64_t max_pixels) {
  jpeg_decompress_struct cinfo;
  std::memset(&cinfo, 0, sizeof cinfo);  // jpeg_destroy_decompress is then safe even if creation failed
  JpegErrors errors;
  std::memset(&errors, 0, sizeof errors);
  cinfo.err = jpeg_std_error(&errors.base);
  errors.base.error_exit = on_jpeg_error;
  errors.base.emit_message = on_jpeg_message;
  errors.problem = ImageProblem::none;
  struct Destroy {
    jpeg_decompress_struct* c;
    ~Destroy() { jpeg_destroy_decompress(c); }
  } destroy{&cinfo};

  if (!jpeg_read_header_phase(&cinfo, &errors, data, size, channels)) return failure(errors.problem, errors.message);
  const int orientation = orientation_of(cinfo);  // now: saved markers are freed by jpeg_finish_decompress
  const int64_t width = cinfo.output_width, height = cinfo.output_height;
  if (width * height > max_pixels) return failure(ImageProblem::too_large, too_large_detail(width, height, max_pixels));
  const int stored_channels = cinfo.output_components;
  PixelImage stored{static_cast<int>(height), static_cast<int>(width), stored_channels, {}};
  stored.pixels.resize(static_cast<size_t>(width * height * stored_channels));
  if (!jpeg_decode_phase(&cinfo, &errors, stored.pixels.data(), static_cast<size_t>(width * stored_channels)))
    return failure(errors.problem, errors.message);

  if (cinfo.out_color_space == JCS_CMYK) {
    std::vector<uint8_t> rgb(static_cast<size_t>(width * height * 3));
    cmyk_to_rgb(stored.pixels.data(), width * height, cinfo.saw_Adobe_marker, rgb.data());
    stored.pixels = std::move(rgb);
    stored.channels = 3;
  }
  if (stored.channels != channels) {
    std::vector<uint8_t> converted(static_cast<size_t>(width * height * channels));
    convert_channels(stored.pixels.data(), stored.channels, width * height, channels, converted.data());
    stored.pixels = std::move(converted);
    stored.channels = channels;
  }
  DecodeResult result;
  result.image = orientation == 1 ? std::move(stored) : apply_exif_orientation(stored, orientation);
  return result;
}

// ---- PNG ---------------------------------------------------------------------------------------

struct PngSource {
  const uint8_t* data;
  size_t size, pos;
  bool ran_out, all_rows_read, too_large;
  int64_t max_pixels;
  char message[256];
};

void read_png_bytes(png_structp png, png_bytep out, size_t n) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (n > src->size - src->pos) {
    src->ran_out = true;
    png_error(png, "the file ends before the image does");
  }
  std::memcpy(out, src->data + src->pos, n);
  src->pos += n;
}

void on_png_error(png_structp png, png_const_charp message) {
  auto* src = static_cast<PngSource*>(png_get_error_ptr(png));
  std::snprintf(src->message, sizeof src->message, "%s", message ? message : "libpng error");
  png_longjmp(png, 1);
}

void on_png_warning(png_structp, png_const_charp) {}  // e.g. a bad iCCP profile: the pixels are fine

// Reads the header and asks libpng for 8-bit gray, gray+alpha, RGB or RGBA rows. C code only after setjmp.
bool png_read_header_phase(png_structp png, png_infop info, PngSource* src) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_read_fn(png, src, read_png_bytes);
  png_read_info(png, info);
  const int64_t width = png_get_image_width(png, info), height = png_get_image_height(png, info);
  if (width * height > src->max_pixels) {
    src->too_large = true;
    return false;
  }
  const int color_type = png_get_color_type(png, info);
  const int bit_depth = png_get_bit_depth(png, info);
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  if (bit_depth == 16) png_set_scale_16(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  return true;
}

bool png_decode_phase(png_structp png, png_infop info, PngSource* src, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_image(png, rows);
  src->all_rows_read = true;
  png_read_end(png, info);
  return true;
}

DecodeResult decode_png(const uint8_t* data, size_t size, int channels, int64_t max_pixels) {
  PngSource src;
  std::memset(&src, 0, sizeof src);
  src.data = data;
  src.size = size;
  src.max_pixels = max_pixels;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, on_png_error, on_png_warning);
  GT_CHECK(png != nullptr, "png_create_read_struct failed (out of memory?)");
  png_infop info = png_create_info_struct(png);
  struct Destroy {
    png_structp* png;
    png_infop* info;
    ~Destroy() { png_destroy_read_struct(png, info, nullptr); }
  } destroy{&png, &info};
  GT_CHECK(info != nullptr, "png_create_info_struct failed (out of memory?)");

  auto problem_of_failure = [&src] {
    return failure(src.ran_out ? ImageProblem::truncated : ImageProblem::corrupt, src.message);
  };
  if (!png_read_header_phase(png, info, &src)) {
    if (src.too_large)
      return failure(ImageProblem::too_large,
                     too_large_detail(png_get_image_width(png, info), png_get_image_height(png, info), max_pixels));
    return problem_of_failure();
  }
  const int width = static_cast<int>(png_get_image_width(png, info));
  const int height = static_cast<int>(png_get_image_height(png, info));
  const int stored_channels = png_get_channels(png, info);
  const size_t row_bytes = png_get_rowbytes(png, info);
  GT_CHECK(row_bytes == static_cast<size_t>(width) * stored_channels, "PNG rows of {} bytes for {} x {} channels",
           row_bytes, width, stored_channels);
  std::vector<uint8_t> stored(row_bytes * static_cast<size_t>(height));
  std::vector<png_bytep> rows(static_cast<size_t>(height));
  for (int y = 0; y < height; ++y) rows[y] = stored.data() + row_bytes * y;
  // Damage after the last row (a cut-off or bad trailing chunk) does not affect the pixels.
  if (!png_decode_phase(png, info, &src, rows.data()) && !src.all_rows_read) return problem_of_failure();

  DecodeResult result;
  result.image = PixelImage{height, width, channels, {}};
  if (stored_channels == channels) {
    result.image.pixels = std::move(stored);
  } else {
    result.image.pixels.resize(static_cast<size_t>(width) * height * channels);
    convert_channels(stored.data(), stored_channels, int64_t{width} * height, channels, result.image.pixels.data());
  }
  return result;
}

bool has_png_signature(const uint8_t* data, size_t size) {
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  return size > 0 && std::memcmp(data, kSignature, std::min<size_t>(size, 8)) == 0;
}

// ---- EXIF --------------------------------------------------------------------------------------

// Bounds-checked reads from a TIFF block in its own byte order.
class TiffBytes {
 public:
  TiffBytes(const uint8_t* data, size_t size, bool little_endian) : data_(data), size_(size), little_(little_endian) {}
  bool u16(size_t at, uint16_t* value) const {
    if (at > size_ || size_ - at < 2) return false;
    const uint8_t* p = data_ + at;
    *value = little_ ? static_cast<uint16_t>(p[0] | p[1] << 8) : static_cast<uint16_t>(p[0] << 8 | p[1]);
    return true;
  }
  bool u32(size_t at, uint32_t* value) const {
    uint16_t a, b;
    if (!u16(at, &a) || !u16(at + 2, &b)) return false;
    *value = little_ ? (uint32_t{b} << 16 | a) : (uint32_t{a} << 16 | b);
    return true;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  bool little_;
};

}  // namespace

int exif_orientation(const uint8_t* app1, size_t size) {
  constexpr size_t kExifHeader = 6;  // "Exif\0\0"
  constexpr uint16_t kOrientationTag = 0x0112, kShortType = 3;
  if (size < kExifHeader + 8 || std::memcmp(app1, "Exif\0\0", kExifHeader) != 0) return 1;
  const uint8_t* tiff_start = app1 + kExifHeader;
  const size_t tiff_size = size - kExifHeader;
  bool little;
  if (tiff_start[0] == 'I' && tiff_start[1] == 'I') {
    little = true;
  } else if (tiff_start[0] == 'M' && tiff_start[1] == 'M') {
    little = false;
  } else {
    return 1;
  }
  const TiffBytes tiff(tiff_start, tiff_size, little);
  uint16_t magic = 0, entries = 0;
  uint32_t ifd0 = 0;
  if (!tiff.u16(2, &magic) || magic != 42 || !tiff.u32(4, &ifd0) || !tiff.u16(ifd0, &entries)) return 1;
  for (size_t i = 0; i < entries; ++i) {
    const size_t entry = size_t{ifd0} + 2 + 12 * i;
    uint16_t tag = 0, type = 0, value = 0;
    uint32_t count = 0;
    if (!tiff.u16(entry, &tag)) return 1;
    if (tag != kOrientationTag) continue;
    if (!tiff.u16(entry + 2, &type) || !tiff.u32(entry + 4, &count) || !tiff.u16(entry + 8, &value)) return 1;
    if (type != kShortType || count < 1 || value < 1 || value > 8) return 1;
    return value;
  }
  return 1;
}

PixelImage apply_exif_orientation(const PixelImage& stored, int orientation) {
  GT_CHECK(orientation >= 1 && orientation <= 8, "EXIF orientation {} out of 1..8", orientation);
  const int H = stored.height, W = stored.width, C = stored.channels;
  const bool swaps = orientation >= 5;
  PixelImage out{swaps ? W : H, swaps ? H : W, C, {}};
  out.pixels.resize(stored.pixels.size());
  for (int r = 0; r < out.height; ++r) {
    for (int c = 0; c < out.width; ++c) {
      // (sr, sc): the stored pixel shown at row r, column c (TIFF/EXIF 2.3, tag 0x0112).
      int sr = r, sc = c;
      switch (orientation) {
        case 2: sc = W - 1 - c; break;                   // mirrored left-right
        case 3: sr = H - 1 - r; sc = W - 1 - c; break;   // rotated 180
        case 4: sr = H - 1 - r; break;                   // mirrored top-bottom
        case 5: sr = c; sc = r; break;                   // transposed
        case 6: sr = H - 1 - c; sc = r; break;           // shown rotated 90 clockwise
        case 7: sr = H - 1 - c; sc = W - 1 - r; break;   // transverse
        case 8: sr = c; sc = W - 1 - r; break;           // shown rotated 90 counter-clockwise
        default: break;
      }
      std::memcpy(&out.pixels[(static_cast<size_t>(r) * out.width + c) * C],
                  &stored.pixels[(static_cast<size_t>(sr) * W + sc) * C], static_cast<size_t>(C));
    }
  }
  return out;
}

void convert_channels(const uint8_t* src, int src_channels, int64_t count, int dst_channels, uint8_t* dst) {
  GT_CHECK(src_channels >= 1 && src_channels <= 4, "source has {} channels", src_channels);
  GT_CHECK(dst_channels == 1 || dst_channels == 3, "target has {} channels", dst_channels);
  auto on_black = [](unsigned value, unsigned alpha) { return static_cast<uint8_t>((value * alpha + 127u) / 255u); };
  // One loop per case, so the per-pixel work has no branches.
  auto each = [&](auto gray_of, auto rgb_of) {
    for (int64_t i = 0; i < count; ++i) {
      const uint8_t* p = src + i * src_channels;
      if (dst_channels == 1) {
        dst[i] = gray_of(p);
      } else {
        rgb_of(p, dst + 3 * i);
      }
    }
  };
  switch (src_channels) {
    case 1:
      each([](const uint8_t* p) { return p[0]; }, [](const uint8_t* p, uint8_t* q) { q[0] = q[1] = q[2] = p[0]; });
      break;
    case 2:
      each([&](const uint8_t* p) { return on_black(p[0], p[1]); },
           [&](const uint8_t* p, uint8_t* q) { q[0] = q[1] = q[2] = on_black(p[0], p[1]); });
      break;
    case 3:
      each([](const uint8_t* p) { return luma_of(p[0], p[1], p[2]); },
           [](const uint8_t* p, uint8_t* q) { q[0] = p[0]; q[1] = p[1]; q[2] = p[2]; });
      break;
    default:
      each([&](const uint8_t* p) { return luma_of(on_black(p[0], p[3]), on_black(p[1], p[3]), on_black(p[2], p[3])); },
           [&](const uint8_t* p, uint8_t* q) {
             for (int c = 0; c < 3; ++c) q[c] = on_black(p[c], p[3]);
           });
      break;
  }
}

DecodeResult decode_image(const uint8_t* data, size_t size, int channels, int64_t max_pixels) {
  GT_CHECK(channels == 1 || channels == 3, "decode_image to {} channels", channels);
  if (size == 0) return failure(ImageProblem::empty, "the file is empty (0 bytes)");
  if (size >= 2 && data[0] == 0xFF && data[1] == 0xD8) return decode_jpeg(data, size, channels, max_pixels);
  if (has_png_signature(data, size)) {
    if (size < 8) return failure(ImageProblem::truncated, "the file ends inside the PNG signature");
    return decode_png(data, size, channels, max_pixels);
  }
  return failure(ImageProblem::not_an_image, describe_non_image(data, size));
}

}  // namespace gt
