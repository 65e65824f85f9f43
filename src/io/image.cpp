// PNG encoding with libpng (in memory; files written to "<path>.tmp" then renamed) and torchvision-style sample grids.
#include "io/image.h"

#include <png.h>

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace gt {

namespace {

// The border between grid cells: mid-gray, i.e. the value 0 of the [-1, 1] range. torchvision pads with 0
// after mapping to [0, 1], which is black and vanishes against the black backgrounds of (Fashion-)MNIST.
constexpr uint8_t kGridBorder = 128;


struct PngErrorState {
  char message[256] = {};
};

void on_png_error(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngErrorState*>(png_get_error_ptr(png));
  std::snprintf(state->message, sizeof state->message, "%s", message ? message : "unknown libpng error");
  png_longjmp(png, 1);
}

void on_png_warning(png_structp, png_const_charp) {}  // warnings do not change the written file; stay quiet

// libpng's output callback: appends to the std::string behind the io pointer.
void append_png_bytes(png_structp png, png_bytep data, png_size_t size) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<const char*>(data), size);
}
void flush_png_bytes(png_structp) {}

// Encodes into `out`. libpng reports errors by longjmp, so no object with a destructor may live in this
// function: it returns false and leaves libpng's message in `state`, and the caller turns that into an exception.
bool encode_png_into(std::string* out, const uint8_t* hwc, int height, int width, int channels, PngErrorState* state) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, state, on_png_error, on_png_warning);
  if (!png) {
    std::snprintf(state->message, sizeof state->message, "libpng could not allocate its write state");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    std::snprintf(state->message, sizeof state->message, "libpng could not allocate its info state");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  const int color_type = channels == 1 ? PNG_COLOR_TYPE_GRAY
                         : channels == 3 ? PNG_COLOR_TYPE_RGB
                                         : PNG_COLOR_TYPE_RGB_ALPHA;
  png_set_write_fn(png, out, append_png_bytes, flush_png_bytes);
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), 8, color_type,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  const size_t row_bytes = static_cast<size_t>(width) * static_cast<size_t>(channels);
  for (int y = 0; y < height; ++y) png_write_row(png, hwc + static_cast<size_t>(y) * row_bytes);
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

}  // namespace

std::string encode_png(const uint8_t* hwc, int height, int width, int channels) {
  GT_CHECK(channels == 1 || channels == 3 || channels == 4, "a PNG must have 1, 3 or 4 channels, not {}", channels);
  GT_CHECK(height > 0 && width > 0, "a PNG must not be empty ({}x{})", height, width);
  GT_CHECK(hwc != nullptr, "no pixels for a PNG");
  std::string out;
  PngErrorState state;
  if (!encode_png_into(&out, hwc, height, width, channels, &state)) runtime_error("cannot encode PNG: {}", state.message);
  return out;
}

void write_png_bytes(const std::string& path, const std::string& png) {
  // Readers (TensorBoard, a browser refreshing samples/) never see a half-written file.
  const std::string tmp = path + ".tmp";
  FILE* out = std::fopen(tmp.c_str(), "wb");
  if (!out) runtime_error("cannot write PNG {}: {}", tmp, std::strerror(errno));
  const bool written = std::fwrite(png.data(), 1, png.size(), out) == png.size();
  const int write_errno = errno;
  const bool closed = std::fclose(out) == 0;
  const int close_errno = errno;
  if (!written || !closed) {
    std::remove(tmp.c_str());
    runtime_error("cannot write PNG {}: {}", path, std::strerror(written ? close_errno : write_errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int rename_errno = errno;
    std::remove(tmp.c_str());
    runtime_error("cannot rename {} to {}: {}", tmp, path, std::strerror(rename_errno));
  }
}

void write_png(const std::string& path, const uint8_t* hwc, int height, int width, int channels) {
  GT_CHECK(channels == 1 || channels == 3 || channels == 4, "PNG {} must have 1, 3 or 4 channels, not {}", path,
           channels);
  GT_CHECK(height > 0 && width > 0, "PNG {} must not be empty ({}x{})", path, height, width);
  GT_CHECK(hwc != nullptr, "no pixels for PNG {}", path);
  std::string png;
  PngErrorState state;
  if (!encode_png_into(&png, hwc, height, width, channels, &state))
    runtime_error("cannot write PNG {}: {}", path, state.message);
  write_png_bytes(path, png);
}

std::vector<uint8_t> make_grid(const Tensor& images, int nrow, int padding, int* height, int* width, int* channels) {
  GT_CHECK(images.dtype() == DType::f32 && images.device() == Device::cpu && images.ndim() == 4,
           "make_grid wants f32 [N, C, H, W] on the CPU, got {}", images.str());
  const int64_t n = images.dim(0), c = images.dim(1), h = images.dim(2), w = images.dim(3);
  GT_CHECK(n > 0 && h > 0 && w > 0, "make_grid got no pixels: {}", images.str());
  GT_CHECK(c == 1 || c == 3, "make_grid wants 1 or 3 channels, got {}", images.str());
  GT_CHECK(nrow > 0 && padding >= 0, "make_grid: nrow {} must be positive and padding {} non-negative", nrow, padding);
  const int64_t cols = std::min<int64_t>(nrow, n);
  const int64_t rows = (n + cols - 1) / cols;
  const int64_t grid_h = rows * (h + padding) + padding;
  const int64_t grid_w = cols * (w + padding) + padding;
  GT_CHECK(grid_h <= INT32_MAX && grid_w <= INT32_MAX, "make_grid of {} is too large", images.str());

  std::vector<uint8_t> grid(static_cast<size_t>(grid_h * grid_w * c), kGridBorder);
  const float* src = images.f32();
  for (int64_t k = 0; k < n; ++k) {
    const int64_t top = (k / cols) * (h + padding) + padding;
    const int64_t left = (k % cols) * (w + padding) + padding;
    for (int64_t ch = 0; ch < c; ++ch) {
      const float* plane = src + (k * c + ch) * h * w;
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) grid[((top + y) * grid_w + left + x) * c + ch] = float_to_pixel(plane[y * w + x]);
    }
  }
  *height = static_cast<int>(grid_h);
  *width = static_cast<int>(grid_w);
  *channels = static_cast<int>(c);
  return grid;
}

PngGrid write_grid_png(const std::string& path, const Tensor& images, int nrow, int padding) {
  PngGrid g;
  std::vector<uint8_t> grid = make_grid(images, nrow, padding, &g.height, &g.width, &g.channels);
  g.png = encode_png(grid.data(), g.height, g.width, g.channels);
  write_png_bytes(path, g.png);
  return g;
}

}  // namespace gt
