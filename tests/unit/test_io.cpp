// Tests for src/io: PNG and sample grids, IDX reading, HDF5 checkpoints and metrics.jsonl.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <png.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "core/error.h"
#include "core/tensor.h"
#include "io/checkpoint.h"
#include "io/idx.h"
#include "io/image.h"
#include "io/metrics.h"
#include "nn/dcgan.h"
#include "train/model_state.h"

namespace fs = std::filesystem;

namespace {

using gt::test::ChildOutcome;
using gt::test::runtime_error_in_child;
using gt::test::TempDir;

std::vector<std::string> files_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  return names;
}

template <class Fn>
std::string user_error_message(Fn&& fn) {
  try {
    fn();
  } catch (const gt::UserError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong exception type: ") + e.what();
  }
  return "no exception";
}

// ---- PNG reading with libpng's classic API, independent of the writer under test --------------

struct DecodedPng {
  bool ok = false;
  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0, channels = 0;
  std::vector<uint8_t> pixels;
};

void read_png_rows(png_structp png, png_infop info, DecodedPng* out) {
  png_read_info(png, info);
  out->width = png_get_image_width(png, info);
  out->height = png_get_image_height(png, info);
  out->bit_depth = png_get_bit_depth(png, info);
  out->color_type = png_get_color_type(png, info);
  out->channels = png_get_channels(png, info);
  size_t row_bytes = png_get_rowbytes(png, info);
  out->pixels.resize(row_bytes * out->height);
  for (png_uint_32 y = 0; y < out->height; ++y) png_read_row(png, out->pixels.data() + y * row_bytes, nullptr);
  png_read_end(png, nullptr);
}

DecodedPng read_png(const std::string& path) {
  DecodedPng out;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return out;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png)) == 0) {
    png_init_io(png, f);
    read_png_rows(png, info, &out);
    out.ok = true;
  }
  png_destroy_read_struct(&png, &info, nullptr);
  std::fclose(f);
  return out;
}

std::vector<uint8_t> random_bytes(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> dist(0, 255);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(dist(gen));
  return v;
}

// A float in [-1, 1] whose grid pixel is `byte` under round((x + 1) * 127.5), away from rounding ties.
float value_for_byte(int byte) { return static_cast<float>((byte + 0.25) / 127.5 - 1.0); }

}  // namespace

// ================================================================================================
// PNG
// ================================================================================================

TEST(WritePng, GrayRgbAndRgbaReadBackExactly) {
  TempDir dir;
  const int height = 7, width = 5;
  const int expected_color_type[] = {0, PNG_COLOR_TYPE_GRAY, 0, PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
  for (int channels : {1, 3, 4}) {
    SCOPED_TRACE(channels);
    std::vector<uint8_t> pixels = random_bytes(static_cast<size_t>(height * width * channels), 17u + channels);
    std::string path = dir.file("img" + std::to_string(channels) + ".png");
    gt::write_png(path, pixels.data(), height, width, channels);
    DecodedPng png = read_png(path);
    ASSERT_TRUE(png.ok);
    EXPECT_EQ(png.width, static_cast<png_uint_32>(width));
    EXPECT_EQ(png.height, static_cast<png_uint_32>(height));
    EXPECT_EQ(png.bit_depth, 8);
    EXPECT_EQ(png.color_type, expected_color_type[channels]);
    EXPECT_EQ(png.channels, channels);
    EXPECT_EQ(png.pixels, pixels);
  }
  for (const std::string& name : files_in(dir.path())) EXPECT_EQ(fs::path(name).extension(), ".png") << name;
}

TEST(WritePng, ReplacesAnExistingFile) {
  TempDir dir;
  std::string path = dir.file("a.png");
  std::vector<uint8_t> small(2 * 2 * 3, 10), large = random_bytes(3 * 4 * 3, 5);
  gt::write_png(path, small.data(), 2, 2, 3);
  gt::write_png(path, large.data(), 3, 4, 3);
  DecodedPng png = read_png(path);
  ASSERT_TRUE(png.ok);
  EXPECT_EQ(png.height, 3u);
  EXPECT_EQ(png.width, 4u);
  EXPECT_EQ(png.pixels, large);
  EXPECT_EQ(files_in(dir.path()).size(), 1u);
}

TEST(WritePng, UnwritablePathIsRuntimeErrorNamingIt) {
  TempDir dir;
  std::string path = dir.file("no/such/dir/a.png");
  std::vector<uint8_t> px(4, 0);
  try {
    gt::write_png(path, px.data(), 2, 2, 1);
    FAIL() << "expected an exception";
  } catch (const gt::RuntimeError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

// ================================================================================================
// make_grid
// ================================================================================================

TEST(MakeGrid, PlacesEachImageInItsCellWithGrayBorders) {
  const int n = 5, c = 3, h = 4, w = 3, nrow = 2, pad = 2;
  auto byte_of = [](int k, int ch, int y, int x) { return (k * 50 + ch * 20 + y * 5 + x * 3 + 7) % 256; };
  gt::Tensor images({n, c, h, w});
  float* p = images.f32();
  for (int k = 0; k < n; ++k)
    for (int ch = 0; ch < c; ++ch)
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) *p++ = value_for_byte(byte_of(k, ch, y, x));

  int gh = 0, gw = 0, gc = 0;
  std::vector<uint8_t> grid = gt::make_grid(images, nrow, pad, &gh, &gw, &gc);
  // torchvision: xmaps = min(nrow, n) columns, ceil(n / xmaps) rows, each cell (h + pad) x (w + pad), plus pad.
  const int cols = 2, rows = 3;
  ASSERT_EQ(gh, rows * (h + pad) + pad);
  ASSERT_EQ(gw, cols * (w + pad) + pad);
  ASSERT_EQ(gc, c);
  ASSERT_EQ(grid.size(), static_cast<size_t>(gh * gw * gc));

  std::vector<bool> covered(static_cast<size_t>(gh * gw), false);
  for (int k = 0; k < n; ++k) {
    int top = pad + (k / cols) * (h + pad), left = pad + (k % cols) * (w + pad);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        covered[static_cast<size_t>((top + y) * gw + left + x)] = true;
        for (int ch = 0; ch < c; ++ch)
          ASSERT_EQ(grid[static_cast<size_t>(((top + y) * gw + left + x) * c + ch)], byte_of(k, ch, y, x))
              << "image " << k << " channel " << ch << " at " << y << "," << x;
      }
  }
  for (int i = 0; i < gh * gw; ++i) {
    if (covered[static_cast<size_t>(i)]) continue;
    for (int ch = 0; ch < c; ++ch) ASSERT_EQ(grid[static_cast<size_t>(i * c + ch)], 128) << "border pixel " << i;
  }
}

TEST(MakeGrid, FewerImagesThanNrowMakesOneShortRow) {
  gt::Tensor images = gt::Tensor::full({3, 1, 2, 2}, 1.f);
  int gh = 0, gw = 0, gc = 0;
  std::vector<uint8_t> grid = gt::make_grid(images, 8, 1, &gh, &gw, &gc);
  EXPECT_EQ(gh, 1 * (2 + 1) + 1);
  EXPECT_EQ(gw, 3 * (2 + 1) + 1);
  EXPECT_EQ(gc, 1);
  EXPECT_EQ(grid[static_cast<size_t>(1 * gw + 1)], 255);  // first pixel of image 0
  EXPECT_EQ(grid[0], 128);                                 // corner border
}

TEST(MakeGrid, MapsMinusOneToOneOntoBytesWithClampingAndRounding) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> values = {-1.f, 1.f, 0.f, 5.f, -5.f, nan, 0.5f, -inf, inf};
  // round((x + 1) * 127.5) with x clamped to [-1, 1]; NaN -> 0 as documented in image.h.
  std::vector<int> expected = {0, 255, 128, 255, 0, 0, 191, 0, 255};
  gt::Tensor images = gt::Tensor::from({1, 1, 1, static_cast<int64_t>(values.size())}, values);
  int gh = 0, gw = 0, gc = 0;
  std::vector<uint8_t> grid = gt::make_grid(images, 1, 0, &gh, &gw, &gc);
  ASSERT_EQ(gh, 1);
  ASSERT_EQ(gw, static_cast<int>(values.size()));
  ASSERT_EQ(gc, 1);
  for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(grid[i], expected[i]) << "value " << values[i];
}

TEST(MakeGrid, WriteGridPngWritesTheGrid) {
  TempDir dir;
  gt::Tensor images({4, 3, 5, 6});
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  for (int64_t i = 0; i < images.numel(); ++i) images.f32()[i] = dist(gen);
  int gh = 0, gw = 0, gc = 0;
  std::vector<uint8_t> grid = gt::make_grid(images, 3, 2, &gh, &gw, &gc);
  std::string path = dir.file("grid.png");
  gt::write_grid_png(path, images, 3, 2);
  DecodedPng png = read_png(path);
  ASSERT_TRUE(png.ok);
  EXPECT_EQ(png.height, static_cast<png_uint_32>(gh));
  EXPECT_EQ(png.width, static_cast<png_uint_32>(gw));
  EXPECT_EQ(png.color_type, PNG_COLOR_TYPE_RGB);
  EXPECT_EQ(png.pixels, grid);
}

// ================================================================================================
// IDX
// ================================================================================================

namespace {

std::vector<uint8_t> idx_bytes(uint32_t magic, const std::vector<uint32_t>& dims, const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> out;
  auto put_be32 = [&](uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
  };
  put_be32(magic);
  for (uint32_t d : dims) put_be32(d);
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

void write_plain(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void write_gzip(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  if (!bytes.empty()) {
    ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  }
  ASSERT_EQ(gzclose(f), Z_OK);
}

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

TEST(Idx, ReadsPlainAndGzippedImages) {
  TempDir dir;
  const uint32_t count = 3, rows = 4, cols = 5;
  std::vector<uint8_t> pixels = random_bytes(count * rows * cols, 11);
  std::vector<uint8_t> file = idx_bytes(0x00000803, {count, rows, cols}, pixels);
  write_plain(dir.file("images"), file);
  write_gzip(dir.file("images.gz"), file);
  for (const char* name : {"images", "images.gz"}) {
    SCOPED_TRACE(name);
    gt::IdxImages images = gt::read_idx_images(dir.file(name));
    EXPECT_EQ(images.count, count);
    EXPECT_EQ(images.height, static_cast<int>(rows));
    EXPECT_EQ(images.width, static_cast<int>(cols));
    EXPECT_EQ(images.pixels, pixels);
  }
}

TEST(Idx, ReadsPlainAndGzippedLabels) {
  TempDir dir;
  std::vector<uint8_t> labels = {3, 1, 4, 1, 5, 9, 2, 6};
  std::vector<uint8_t> file = idx_bytes(0x00000801, {static_cast<uint32_t>(labels.size())}, labels);
  write_plain(dir.file("labels"), file);
  write_gzip(dir.file("labels.gz"), file);
  EXPECT_EQ(gt::read_idx_labels(dir.file("labels")), labels);
  EXPECT_EQ(gt::read_idx_labels(dir.file("labels.gz")), labels);
}

TEST(Idx, EveryMalformedImageFileIsAUserErrorNamingIt) {
  TempDir dir;
  const std::vector<uint8_t> pixels = random_bytes(2 * 3 * 3, 4);
  const std::vector<uint8_t> good = idx_bytes(0x00000803, {2, 3, 3}, pixels);
  struct Case {
    std::string name;
    std::vector<uint8_t> bytes;
    bool gzip;
    std::string keyword;
  };
  std::vector<Case> cases = {
      {"empty", {}, false, "truncated"},
      {"short_magic", {0, 0, 8}, false, "truncated"},
      {"wrong_magic", idx_bytes(0x12345678, {2, 3, 3}, pixels), false, "magic"},
      {"labels_not_images", idx_bytes(0x00000801, {18}, pixels), false, "label"},
      {"signed_bytes", idx_bytes(0x00000903, {2, 3, 3}, pixels), false, "type"},
      {"truncated_dims", std::vector<uint8_t>(good.begin(), good.begin() + 10), false, "truncated"},
      {"truncated_pixels", std::vector<uint8_t>(good.begin(), good.end() - 1), false, "truncated"},
      {"truncated_pixels.gz", std::vector<uint8_t>(good.begin(), good.end() - 5), true, "truncated"},
      {"extra_bytes", [&] { auto v = good; v.push_back(0); return v; }(), false, "longer"},
      {"zero_rows", idx_bytes(0x00000803, {2, 0, 3}, {}), false, "size 0"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::string path = dir.file(c.name);
    if (c.gzip) {
      write_gzip(path, c.bytes);
    } else {
      write_plain(path, c.bytes);
    }
    std::string message = user_error_message([&] { gt::read_idx_images(path); });
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find(c.keyword), std::string::npos) << message;
  }

  // A gzip stream cut in the middle of its compressed data, and one whose compressed data is garbage.
  write_gzip(dir.file("whole.gz"), good);
  std::vector<uint8_t> gz = read_all(dir.file("whole.gz"));
  ASSERT_GT(gz.size(), 20u);
  write_plain(dir.file("cut.gz"), std::vector<uint8_t>(gz.begin(), gz.begin() + static_cast<long>(gz.size() / 2)));
  std::vector<uint8_t> garbage(gz.begin(), gz.begin() + 10);  // a valid gzip header
  for (int i = 0; i < 64; ++i) garbage.push_back(static_cast<uint8_t>(0xff - i));
  write_plain(dir.file("garbage.gz"), garbage);
  for (const char* name : {"cut.gz", "garbage.gz"}) {
    SCOPED_TRACE(name);
    std::string message = user_error_message([&] { gt::read_idx_images(dir.file(name)); });
    EXPECT_NE(message.find(dir.file(name)), std::string::npos) << message;
  }

  std::string missing = dir.file("missing");
  std::string message = user_error_message([&] { gt::read_idx_images(missing); });
  EXPECT_NE(message.find(missing), std::string::npos) << message;
  EXPECT_NE(message.find("does not exist"), std::string::npos) << message;

  message = user_error_message([&] { gt::read_idx_images(dir.path().string()); });
  EXPECT_NE(message.find(dir.path().string()), std::string::npos) << message;
  EXPECT_NE(message.find("directory"), std::string::npos) << message;
}

// A header's dimensions are checked against the file before any memory is sized from them.
TEST(Idx, DeclaredSizesAreCheckedAgainstTheFileBeforeAllocating) {
  TempDir dir;
  const std::vector<uint8_t> huge = idx_bytes(0x00000803, {60000, 28, 28}, random_bytes(64, 5));
  write_plain(dir.file("huge"), huge);
  write_gzip(dir.file("huge.gz"), huge);
  std::string message = user_error_message([&] { gt::read_idx_images(dir.file("huge")); });
  EXPECT_CONTAINS(message, dir.file("huge"));
  EXPECT_CONTAINS(message, "60000 images of 28x28 (47040000 bytes) but only 64 bytes follow");
  message = user_error_message([&] { gt::read_idx_images(dir.file("huge.gz")); });
  EXPECT_CONTAINS(message, dir.file("huge.gz"));
  EXPECT_CONTAINS(message, "gzip-compressed bytes can hold");

  const std::vector<uint8_t> labels = idx_bytes(0x00000801, {4000000000u}, {1, 2, 3});
  write_plain(dir.file("labels"), labels);
  message = user_error_message([&] { gt::read_idx_labels(dir.file("labels")); });
  EXPECT_CONTAINS(message, "4000000000 labels (4000000000 bytes) but only 3 bytes follow");
}

TEST(Idx, ImageFileGivenToLabelReaderIsAUserError) {
  TempDir dir;
  std::string path = dir.file("images");
  write_plain(path, idx_bytes(0x00000803, {1, 2, 2}, {1, 2, 3, 4}));
  std::string message = user_error_message([&] { gt::read_idx_labels(path); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("magic"), std::string::npos) << message;
}

TEST(Idx, FashionMnistLookupPrefersGzipAndExplainsWhereItLooked) {
  TempDir dir;
  std::string dir_path = dir.path().string();
  std::string message = user_error_message([&] { gt::fashion_mnist_train_images(dir_path); });
  EXPECT_NE(message.find(dir.file("train-images-idx3-ubyte.gz")), std::string::npos) << message;
  EXPECT_NE(message.find(dir.file("train-images-idx3-ubyte")), std::string::npos) << message;
  EXPECT_NE(message.find("dataset-fashion-mnist"), std::string::npos) << message;

  write_plain(dir.file("train-images-idx3-ubyte"), {0});
  EXPECT_EQ(gt::fashion_mnist_train_images(dir_path), dir.file("train-images-idx3-ubyte"));
  write_plain(dir.file("train-images-idx3-ubyte.gz"), {0});
  EXPECT_EQ(gt::fashion_mnist_train_images(dir_path), dir.file("train-images-idx3-ubyte.gz"));

  std::string nowhere = dir.file("nowhere");
  message = user_error_message([&] { gt::fashion_mnist_train_images(nowhere); });
  EXPECT_NE(message.find(nowhere), std::string::npos) << message;
  EXPECT_NE(message.find("does not exist"), std::string::npos) << message;
}

TEST(Idx, RealFashionMnistTrainingSet) {
  std::string dir = gt::kFashionMnistDefaultDir;
  if (!fs::exists(fs::path(dir) / "train-images-idx3-ubyte.gz") && !fs::exists(fs::path(dir) / "train-images-idx3-ubyte"))
    GT_SKIP_MISSING("Fashion-MNIST is not installed in " << dir << " (Debian package dataset-fashion-mnist)");
  gt::IdxImages images = gt::read_idx_images(gt::fashion_mnist_train_images(dir));
  EXPECT_EQ(images.count, 60000);
  EXPECT_EQ(images.height, 28);
  EXPECT_EQ(images.width, 28);
  ASSERT_EQ(images.pixels.size(), size_t{60000} * 28 * 28);
  double sum = 0;
  for (uint8_t v : images.pixels) sum += v;
  // The published training-set mean of Fashion-MNIST is 0.2860 (of 255).
  EXPECT_NEAR(sum / static_cast<double>(images.pixels.size()) / 255.0, 0.2860, 0.001);

  fs::path labels_path = fs::path(dir) / "train-labels-idx1-ubyte.gz";
  if (fs::exists(labels_path)) {
    std::vector<uint8_t> labels = gt::read_idx_labels(labels_path.string());
    ASSERT_EQ(labels.size(), 60000u);
    std::vector<int> per_class(256, 0);
    for (uint8_t l : labels) ++per_class[l];
    for (int k = 0; k < 10; ++k) EXPECT_EQ(per_class[k], 6000) << "class " << k;  // the set is balanced
  }
}

// ================================================================================================
// Checkpoints
// ================================================================================================

namespace {

gt::Tensor random_f32(gt::Shape shape, unsigned seed) {
  gt::Tensor t(std::move(shape));
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist;
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = dist(gen);
  return t;
}

gt::Checkpoint sample_checkpoint() {
  gt::Checkpoint ckpt;
  ckpt.meta.step = 1234;
  ckpt.meta.epoch = 5;
  ckpt.meta.images_seen = int64_t{1} << 40;
  ckpt.meta.world_size = 4;
  ckpt.meta.seed = -7;
  ckpt.meta.resolution = 64;
  ckpt.meta.alpha = 0.375;
  ckpt.meta.config_yaml = "model:\n  nz: 100\n  name: \"dcgan\"  # café\n\ntrain:\n  batch: 1024\n";
  ckpt.meta.code_version = "0.1.0+abc123";
  ckpt.meta.ints = {{"data_cursor", 987654321}, {"negative", -5}};

  gt::Tensor count(gt::Shape{}, gt::DType::i64);
  *count.i64() = int64_t{1} << 33;
  gt::Tensor rng_state({16}, gt::DType::u8);
  for (int i = 0; i < 16; ++i) rng_state.u8()[i] = static_cast<uint8_t>(i * 17);
  gt::Tensor scalar(gt::Shape{});
  *scalar.f32() = -2.5f;
  // Names deliberately out of alphabetical order: loading must keep the saved order.
  ckpt.groups["G/params"] = {{"main.0.weight", random_f32({4, 3, 2, 2}, 1)},
                             {"main.1.running_mean", random_f32({3}, 2)},
                             {"main.1.num_batches_tracked", count},
                             {"a_scalar", scalar},
                             {"empty", gt::Tensor({0, 3})}};
  ckpt.groups["D/params"] = {{"main.0.weight", random_f32({2, 5}, 3)}};
  ckpt.groups["state/rng"] = {{"philox", rng_state}};
  ckpt.groups["opt/G/adam/m"] = {{"main.0.weight", random_f32({4, 3, 2, 2}, 4)}};
  return ckpt;
}

void expect_same_tensor(const gt::Tensor& a, const gt::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.dtype(), b.dtype()) << what;
  ASSERT_EQ(a.shape(), b.shape()) << what;
  ASSERT_EQ(a.nbytes(), b.nbytes()) << what;
  if (a.nbytes() > 0) {
    EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << what;
  }
}

void expect_same_checkpoint(const gt::Checkpoint& a, const gt::Checkpoint& b) {
  EXPECT_EQ(a.meta.format_version, b.meta.format_version);
  EXPECT_EQ(a.meta.step, b.meta.step);
  EXPECT_EQ(a.meta.epoch, b.meta.epoch);
  EXPECT_EQ(a.meta.images_seen, b.meta.images_seen);
  EXPECT_EQ(a.meta.world_size, b.meta.world_size);
  EXPECT_EQ(a.meta.seed, b.meta.seed);
  EXPECT_EQ(a.meta.resolution, b.meta.resolution);
  EXPECT_EQ(a.meta.alpha, b.meta.alpha);
  EXPECT_EQ(a.meta.config_yaml, b.meta.config_yaml);
  EXPECT_EQ(a.meta.code_version, b.meta.code_version);
  EXPECT_EQ(a.meta.ints, b.meta.ints);
  ASSERT_EQ(a.groups.size(), b.groups.size());
  for (const auto& [group, tensors] : a.groups) {
    auto it = b.groups.find(group);
    ASSERT_NE(it, b.groups.end()) << group;
    ASSERT_EQ(tensors.size(), it->second.size()) << group;
    for (size_t i = 0; i < tensors.size(); ++i) {
      EXPECT_EQ(tensors[i].first, it->second[i].first) << group << " entry " << i;
      expect_same_tensor(tensors[i].second, it->second[i].second, group + "/" + tensors[i].first);
    }
  }
}


constexpr const char* kDigestMismatch =
    "its contents do not match the digest written with it (the file changed after it was written)";

// Rewrites the integer attribute /meta/NAME through HDF5 (so every HDF5 checksum stays valid; the
// whole-file digest does not, until gt::reseal_checkpoint).
void set_meta_int(const std::string& path, const char* name, int64_t value) {
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  hid_t meta = H5Gopen2(file, "meta", H5P_DEFAULT);
  ASSERT_GE(meta, 0);
  hid_t attr = H5Aopen(meta, name, H5P_DEFAULT);
  ASSERT_GE(attr, 0);
  EXPECT_GE(H5Awrite(attr, H5T_NATIVE_INT64, &value), 0);
  H5Aclose(attr);
  H5Gclose(meta);
  H5Fclose(file);
}

std::vector<char> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void flip_byte(const std::string& path, size_t offset) {
  std::vector<char> bytes = file_bytes(path);
  ASSERT_LT(offset, bytes.size());
  bytes[offset] = static_cast<char>(bytes[offset] ^ 0x5a);
  write_bytes(path, bytes);
}

// Where `pattern` starts in the file; fails the test unless it occurs exactly once.
size_t unique_offset_of(const std::string& path, const std::string& pattern) {
  std::vector<char> bytes = file_bytes(path);
  auto at = std::search(bytes.begin(), bytes.end(), pattern.begin(), pattern.end());
  EXPECT_NE(at, bytes.end()) << "pattern not in " << path;
  if (at == bytes.end()) return 0;
  EXPECT_EQ(std::search(at + 1, bytes.end(), pattern.begin(), pattern.end()), bytes.end()) << "pattern twice";
  return static_cast<size_t>(at - bytes.begin());
}

// File offset and stored size of the (first) chunk of a chunked dataset.
std::pair<haddr_t, hsize_t> first_chunk_of(const std::string& path, const char* dataset) {
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t dset = H5Dopen2(file, dataset, H5P_DEFAULT);
  hid_t space = H5Dget_space(dset);
  hsize_t coords[8] = {};
  unsigned filter_mask = 0;
  haddr_t address = HADDR_UNDEF;
  hsize_t size = 0;
  EXPECT_GE(H5Dget_chunk_info(dset, space, 0, coords, &filter_mask, &address, &size), 0);
  H5Sclose(space);
  H5Dclose(dset);
  H5Fclose(file);
  return {address, size};
}


}  // namespace

TEST(Checkpoint, RoundTripsTensorsAndMetaInOrder) {
  TempDir dir;
  std::string path = dir.file("ckpt.h5");
  gt::Checkpoint saved = sample_checkpoint();
  gt::save_checkpoint(path, saved);
  gt::Checkpoint loaded = gt::load_checkpoint(path);
  expect_same_checkpoint(saved, loaded);

  const gt::Tensor* weight = loaded.find("D/params", "main.0.weight");
  ASSERT_NE(weight, nullptr);
  EXPECT_EQ(weight->shape(), (gt::Shape{2, 5}));
  EXPECT_EQ(loaded.find("D/params", "nope"), nullptr);
  EXPECT_EQ(loaded.find("X/params", "main.0.weight"), nullptr);
}

TEST(Checkpoint, LeavesNoTmpFileAndOverwritesAnExistingCheckpoint) {
  TempDir dir;
  std::string path = dir.file("ckpt.h5");
  gt::Checkpoint first = sample_checkpoint();
  gt::save_checkpoint(path, first);
  gt::Checkpoint second = sample_checkpoint();
  second.meta.step = 2000;
  second.groups.erase("opt/G/adam/m");
  second.groups["G/params"][0].second = random_f32({4, 3, 2, 2}, 99);
  gt::save_checkpoint(path, second);
  EXPECT_EQ(files_in(dir.path()), std::vector<std::string>{"ckpt.h5"});
  expect_same_checkpoint(second, gt::load_checkpoint(path));
}

TEST(Checkpoint, SaveIntoMissingDirectoryIsRuntimeErrorAndLeavesNothing) {
  TempDir dir;
  std::string path = dir.file("missing/ckpt.h5");
  try {
    gt::save_checkpoint(path, sample_checkpoint());
    FAIL() << "expected an exception";
  } catch (const gt::RuntimeError& e) {
    EXPECT_NE(std::string(e.what()).find(path + ".tmp"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(files_in(dir.path()).empty());
}

TEST(Checkpoint, RejectedGroupNameLeavesNoTmpFile) {
  TempDir dir;
  std::string path = dir.file("ckpt.h5");
  gt::Checkpoint ckpt = sample_checkpoint();
  ckpt.groups["meta"] = {{"x", random_f32({1}, 1)}};
  EXPECT_THROW(gt::save_checkpoint(path, ckpt), gt::RuntimeError);
  EXPECT_TRUE(files_in(dir.path()).empty());
}

TEST(Checkpoint, BadFilesAreUserErrorsNamingThemWithoutHdf5StackDumps) {
  TempDir dir;
  std::string missing = dir.file("missing.h5");
  std::string text = dir.file("notes.h5");
  write_plain(text, {'h', 'e', 'l', 'l', 'o', '\n'});
  std::string no_meta = dir.file("no_meta.h5");
  {
    hid_t file = H5Fcreate(no_meta.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(file, 0);
    hid_t group = H5Gcreate2(file, "G", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(group, 0);
    H5Gclose(group);
    H5Fclose(file);
  }
  std::string newer = dir.file("newer.h5");
  gt::save_checkpoint(newer, sample_checkpoint());
  set_meta_int(newer, "format_version", 99);
  gt::reseal_checkpoint(newer);  // an edit on purpose: the file is whole, its content says 99

  struct Case {
    std::string path, keyword;
  };
  for (const Case& c : {Case{missing, "does not exist"}, Case{text, "not an HDF5 file"}, Case{no_meta, "/meta"},
                        Case{newer, "format_version"}, Case{dir.path().string(), "directory"}}) {
    SCOPED_TRACE(c.path);
    testing::internal::CaptureStderr();
    std::string message = user_error_message([&] { gt::load_checkpoint(c.path); });
    std::string stderr_text = testing::internal::GetCapturedStderr();
    EXPECT_NE(message.find(c.path), std::string::npos) << message;
    EXPECT_NE(message.find(c.keyword), std::string::npos) << message;
    EXPECT_EQ(stderr_text, "");
  }
}

TEST(Checkpoint, Format3ChecksumsEveryTensorAndKeepsScalarsInTheHeader) {
  TempDir dir;
  std::string path = dir.file("ckpt.h5");
  gt::Checkpoint saved = sample_checkpoint();
  gt::save_checkpoint(path, saved);
  EXPECT_EQ(gt::checkpoint_problem(path), "");
  gt::Checkpoint loaded = gt::load_checkpoint(path);
  EXPECT_EQ(loaded.meta.format_version, 3);
  expect_same_checkpoint(saved, loaded);
  EXPECT_EQ(*loaded.find("G/params", "main.1.num_batches_tracked")->i64(), int64_t{1} << 33);
  EXPECT_EQ(*loaded.find("G/params", "a_scalar")->f32(), -2.5f);

  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  H5F_info2_t info;
  ASSERT_GE(H5Fget_info2(file, &info), 0);
  EXPECT_GE(info.super.version, 2u) << "the superblock must carry a checksum";
  auto layout_of = [&](const char* name, bool* fletcher32) {
    hid_t dset = H5Dopen2(file, name, H5P_DEFAULT);
    hid_t plist = H5Dget_create_plist(dset);
    H5D_layout_t layout = H5Pget_layout(plist);
    *fletcher32 = false;
    for (int i = 0; i < H5Pget_nfilters(plist); ++i) {
      unsigned flags = 0, config = 0;
      size_t n = 0;
      if (H5Pget_filter2(plist, static_cast<unsigned>(i), &flags, &n, nullptr, 0, nullptr, &config) ==
          H5Z_FILTER_FLETCHER32)
        *fletcher32 = true;
    }
    H5Pclose(plist);
    H5Dclose(dset);
    return layout;
  };
  bool fletcher32 = false;
  EXPECT_EQ(layout_of("G/params/main.0.weight", &fletcher32), H5D_CHUNKED);
  EXPECT_TRUE(fletcher32);
  EXPECT_EQ(layout_of("state/rng/philox", &fletcher32), H5D_CHUNKED);
  EXPECT_TRUE(fletcher32);
  EXPECT_EQ(layout_of("G/params/main.1.num_batches_tracked", &fletcher32), H5D_COMPACT);
  EXPECT_EQ(layout_of("G/params/a_scalar", &fletcher32), H5D_COMPACT);
  H5Fclose(file);
}

TEST(Checkpoint, Format1FilesWithoutChecksumsStillLoad) {
  TempDir dir;
  std::string path = dir.file("v1.h5");
  // Format 1 as the old writer made it: default (1.6) file format, contiguous datasets, no digests.
  hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  hid_t meta = H5Gcreate2(file, "meta", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  hid_t scalar = H5Screate(H5S_SCALAR);
  for (const char* name : {"format_version", "step", "epoch", "images_seen", "world_size", "seed", "resolution"}) {
    int64_t value = std::string(name) == "step" ? 20 : 1;
    hid_t attr = H5Acreate2(meta, name, H5T_STD_I64LE, scalar, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(attr, H5T_NATIVE_INT64, &value);
    H5Aclose(attr);
  }
  double alpha = 1.0;
  hid_t attr = H5Acreate2(meta, "alpha", H5T_IEEE_F64LE, scalar, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(attr, H5T_NATIVE_DOUBLE, &alpha);
  H5Aclose(attr);
  for (const char* name : {"config", "code_version"}) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, 4);
    attr = H5Acreate2(meta, name, type, scalar, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(attr, type, "abcd");
    H5Aclose(attr);
    H5Tclose(type);
  }
  H5Gclose(meta);
  hid_t group = H5Gcreate2(file, "G", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  hsize_t dims[1] = {3};
  hid_t space = H5Screate_simple(1, dims, nullptr);
  hid_t dset = H5Dcreate2(group, "w", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  const float values[3] = {1.f, 2.f, 3.f};
  H5Dwrite(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values);
  H5Dclose(dset);
  hid_t step = H5Dcreate2(group, "step", H5T_STD_I64LE, scalar, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  const int64_t seven = 7;
  H5Dwrite(step, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &seven);
  H5Dclose(step);
  H5Sclose(space);
  H5Sclose(scalar);
  H5Gclose(group);
  H5Fclose(file);

  EXPECT_EQ(gt::checkpoint_problem(path), "");
  gt::Checkpoint ck = gt::load_checkpoint(path);
  EXPECT_EQ(ck.meta.format_version, 1);
  EXPECT_EQ(ck.meta.step, 20);
  EXPECT_EQ(ck.meta.config_yaml, "abcd");
  ASSERT_NE(ck.find("G", "w"), nullptr);
  EXPECT_EQ(ck.find("G", "w")->f32()[2], 3.f);
  EXPECT_EQ(*ck.find("G", "step")->i64(), 7);
}

TEST(Checkpoint, TruncatedFilesAreNamedAsTruncatedAtEveryCut) {
  TempDir dir;
  std::string good = dir.file("good.h5");
  gt::save_checkpoint(good, sample_checkpoint());
  const std::vector<char> bytes = file_bytes(good);
  for (size_t keep : {size_t{0}, size_t{5}, size_t{200}, bytes.size() / 2, bytes.size() - 1}) {
    std::string cut = dir.file("cut_" + std::to_string(keep) + ".h5");
    write_bytes(cut, std::vector<char>(bytes.begin(), bytes.begin() + static_cast<long>(keep)));
    SCOPED_TRACE(cut);
    testing::internal::CaptureStderr();
    const std::string problem = gt::checkpoint_problem(cut);
    EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
    EXPECT_CONTAINS(problem, "checkpoint " + cut + " is truncated");
    EXPECT_EQ(std::count(problem.begin(), problem.end(), '\n'), 0) << problem;
    EXPECT_EQ(user_error_message([&] { gt::load_checkpoint(cut); }), problem);
  }
  EXPECT_EQ(gt::checkpoint_problem(good), "");
}

TEST(Checkpoint, FlippedTensorByteIsAChecksumMismatchNamingTheTensor) {
  TempDir dir;
  std::string path = dir.file("ckpt.h5");
  gt::save_checkpoint(path, sample_checkpoint());
  auto [address, size] = first_chunk_of(path, "G/params/main.0.weight");
  ASSERT_NE(address, HADDR_UNDEF);
  ASSERT_EQ(size, 4u * 3 * 2 * 2 * 4 + 4);  // the floats and Fletcher32's 4 bytes
  flip_byte(path, 512 + address + size / 2);  // HDF5 addresses count from the superblock, after the 512-byte user block
  // The whole-file digest refuses it before HDF5 reads a byte; under it, HDF5's own checksum names the tensor.
  EXPECT_EQ(gt::checkpoint_problem(path), "checkpoint " + path + " is corrupt: " + kDigestMismatch);
  EXPECT_EQ(user_error_message([&] { gt::load_checkpoint(path); }), gt::checkpoint_problem(path));
  EXPECT_EQ(user_error_message([&] { gt::parse_checkpoint_hdf5(path); }),
            "checkpoint " + path + " is corrupt: checksum of /G/params/main.0.weight does not match");
}

TEST(Checkpoint, FlippedScalarByteIsCaughtByTheObjectHeaderChecksum) {
  TempDir dir;
  std::string path = dir.file("ckpt.h5");
  gt::Checkpoint ckpt = sample_checkpoint();
  gt::Tensor step(gt::Shape{}, gt::DType::i64);
  *step.i64() = 0x0123456789abcdefll;  // a pattern found once in the file
  ckpt.groups["G/optim"] = {{"step", step}};
  gt::save_checkpoint(path, ckpt);
  const int64_t value = *step.i64();
  const size_t at = unique_offset_of(path, std::string(reinterpret_cast<const char*>(&value), sizeof value));
  flip_byte(path, at + 3);
  EXPECT_EQ(gt::checkpoint_problem(path), "checkpoint " + path + " is corrupt: " + kDigestMismatch);
  EXPECT_EQ(user_error_message([&] { gt::parse_checkpoint_hdf5(path); }),
            "checkpoint " + path + " is corrupt: checksum of /G/optim/step does not match");
}

TEST(Checkpoint, FlippedConfigTextIsCaughtByItsDigest) {
  TempDir dir;
  std::string path = dir.file("ckpt.h5");
  gt::Checkpoint ckpt = sample_checkpoint();
  ckpt.meta.config_yaml += "# marker-7f3a9c\n";
  gt::save_checkpoint(path, ckpt);
  flip_byte(path, unique_offset_of(path, "marker-7f3a9c") + 2);
  EXPECT_EQ(gt::checkpoint_problem(path), "checkpoint " + path + " is corrupt: " + kDigestMismatch);
  EXPECT_EQ(user_error_message([&] { gt::parse_checkpoint_hdf5(path); }),
            "checkpoint " + path + " is corrupt: the text of /meta/config does not match its digest /meta/config_digest");
}

TEST(Checkpoint, TheDigestBlockIsCheckedBeforeHdf5OpensTheFile) {
  TempDir dir;
  std::string path = dir.file("ckpt.h5");
  gt::save_checkpoint(path, sample_checkpoint());
  const std::vector<char> good = file_bytes(path);
  ASSERT_EQ(std::string(good.data(), 20), "gantrain checkpoint\n");
  // Every byte after the block is covered: flip one at a time at spread-out places, each is refused
  // with the digest's sentence (HDF5 never sees the file).
  for (size_t at = 512; at < good.size(); at += good.size() / 37) {
    std::vector<char> bad = good;
    bad[at] = static_cast<char>(bad[at] ^ 0x01);
    write_bytes(path, bad);
    testing::internal::CaptureStderr();
    EXPECT_EQ(gt::checkpoint_problem(path), "checkpoint " + path + " is corrupt: " + kDigestMismatch) << "byte " << at;
    EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  }
  // A damaged block, bytes appended, a block wiped (HDF5 would find the superblock after it and parse
  // the file unverified: refused before HDF5 sees it).
  std::vector<char> bad = good;
  bad[30] = 'X';
  write_bytes(path, bad);
  EXPECT_CONTAINS(gt::checkpoint_problem(path), "its digest block (the first 512 bytes) is damaged");
  bad = good;
  bad.push_back('\n');
  write_bytes(path, bad);
  EXPECT_CONTAINS(gt::checkpoint_problem(path), "bytes were added or it was modified");
  bad = good;
  std::fill(bad.begin(), bad.begin() + 512, '\0');
  write_bytes(path, bad);
  EXPECT_EQ(gt::checkpoint_problem(path),
            "checkpoint " + path + " is corrupt: its digest block (the first 512 bytes) is damaged");
  // Resealed after an edit on purpose, it loads again.
  write_bytes(path, good);
  set_meta_int(path, "step", 77);
  EXPECT_CONTAINS(gt::checkpoint_problem(path), "is corrupt") << "an HDF5 edit without a reseal";
  gt::reseal_checkpoint(path);
  EXPECT_EQ(gt::load_checkpoint(path).meta.step, 77);
}

TEST(Checkpoint, ForeignAndFutureFilesAreNamedWithTheirProblem) {
  TempDir dir;
  std::string no_meta = dir.file("no_meta.h5");
  hid_t file = H5Fcreate(no_meta.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  H5Fclose(file);
  EXPECT_EQ(gt::checkpoint_problem(no_meta), "checkpoint " + no_meta + " is not a gantrain checkpoint: it has no /meta group");
  std::string future = dir.file("future.h5");
  gt::save_checkpoint(future, sample_checkpoint());
  set_meta_int(future, "format_version", 99);
  gt::reseal_checkpoint(future);
  EXPECT_EQ(gt::checkpoint_problem(future), "checkpoint " + future +
                                                " has format_version 99; this build reads 1 to 3 (a newer gantrain wrote it?)");
  EXPECT_CONTAINS(gt::checkpoint_problem(dir.file("missing.h5")), "does not exist");
  EXPECT_CONTAINS(gt::checkpoint_problem(dir.str()), "directory");
}

TEST(Checkpoint, Format3DatasetRewrittenWithoutItsChecksumIsRefused) {
  TempDir dir;
  std::string path = dir.file("ckpt.h5");
  gt::save_checkpoint(path, sample_checkpoint());
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  ASSERT_GE(H5Ldelete(file, "D/params/main.0.weight", H5P_DEFAULT), 0);
  hsize_t dims[2] = {2, 5};
  hid_t space = H5Screate_simple(2, dims, nullptr);
  hid_t dset = H5Dcreate2(file, "D/params/main.0.weight", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  const std::vector<float> zeros(10, 0.f);
  H5Dwrite(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros.data());
  H5Dclose(dset);
  H5Sclose(space);
  H5Fclose(file);
  gt::reseal_checkpoint(path);
  EXPECT_EQ(gt::checkpoint_problem(path), "checkpoint " + path +
                                              " is not a valid format-3 checkpoint: dataset /D/params/main.0.weight "
                                              "has no Fletcher32 checksum (was it rewritten by another tool?)");
}

// A tensor's shape sizes its memory: it is checked against the file before the tensor is allocated.
TEST(Checkpoint, TensorShapesLargerThanTheFileAreRefusedBeforeAllocating) {
  TempDir dir;
  const std::string path = dir.file("ckpt.h5");
  gt::save_checkpoint(path, sample_checkpoint());
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  const hsize_t dims[2] = {hsize_t{1} << 40, hsize_t{1} << 20}, chunk[2] = {1, 1024};
  hid_t space = H5Screate_simple(2, dims, nullptr);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  ASSERT_GE(H5Pset_chunk(dcpl, 2, chunk), 0);
  ASSERT_GE(H5Pset_fletcher32(dcpl), 0);
  hid_t set = H5Dcreate2(file, "G/params/huge", H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  ASSERT_GE(set, 0);
  H5Dclose(set);
  H5Pclose(dcpl);
  H5Sclose(space);
  H5Fclose(file);
  // The HDF5 reader alone: load_checkpoint's whole-file digest would refuse the edited file first.
  const std::string message = user_error_message([&] { gt::parse_checkpoint_hdf5(path); });
  EXPECT_CONTAINS(message, path);
  EXPECT_CONTAINS(message, "/G/params/huge");
  EXPECT_CONTAINS(message, "[1099511627776, 1048576] (4611686018427387904 bytes)");
  EXPECT_CONTAINS(message, "bytes can hold");
}

TEST(Checkpoint, FirstNonfiniteTensorNamesGroupAndTensor) {
  gt::Checkpoint ckpt = sample_checkpoint();
  EXPECT_EQ(gt::first_nonfinite_tensor(ckpt), "");
  ckpt.groups["G/params"][1].second.f32()[2] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(gt::first_nonfinite_tensor(ckpt), "G/params/main.1.running_mean");
  ckpt.groups["D/params"][0].second.f32()[9] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(gt::first_nonfinite_tensor(ckpt), "D/params/main.0.weight");  // groups in name order
}

// A full disk, simulated with a file-size limit (EFBIG, SIGXFSZ ignored) in a child process.
TEST(Checkpoint, WriteOverTheFileSizeLimitNamesTheFileAndTouchesNothingElse) {
  TempDir dir;
  std::string earlier = dir.file("ckpt_00000010.h5");
  std::string next = dir.file("ckpt_00000020.h5");
  gt::save_checkpoint(earlier, sample_checkpoint());
  const std::vector<char> earlier_bytes = file_bytes(earlier);
  gt::Checkpoint big = sample_checkpoint();
  big.groups["G/params"].emplace_back("large", random_f32({256, 1024}, 5));  // 1 MiB

  const ChildOutcome out = runtime_error_in_child([&] {
    signal(SIGXFSZ, SIG_IGN);
    rlimit limit{256 * 1024, 256 * 1024};
    setrlimit(RLIMIT_FSIZE, &limit);
    gt::save_checkpoint(next, big);
  });
  EXPECT_TRUE(out.runtime_error) << out.message;
  const std::string& message = out.message;
  EXPECT_EQ(message, "cannot write checkpoint " + next + ": File too large (the earlier checkpoints are untouched)");
  EXPECT_EQ(files_in(dir.path()), std::vector<std::string>{"ckpt_00000010.h5"});
  EXPECT_EQ(file_bytes(earlier), earlier_bytes);
  EXPECT_EQ(gt::checkpoint_problem(earlier), "");
}

TEST(ImportStateDict, NamesAMissingOrReshapedTensor) {
  gt::DcganSpec spec;
  spec.nz = 4;
  spec.g_width = 2;
  spec.resolution = 32;
  spec.channels = 1;
  gt::Sequential G = gt::make_dcgan_generator(spec);
  gt::Checkpoint ck;
  gt::export_state_dict(G, "G/params", ck.groups);
  gt::Sequential fresh = gt::make_dcgan_generator(spec);
  gt::import_state_dict(fresh, ck, "G/params", "ck.h5");  // complete: no error

  gt::Checkpoint missing = ck;
  auto& tensors = missing.groups["G/params"];
  tensors.erase(tensors.begin());
  EXPECT_CONTAINS(user_error_message([&] { gt::import_state_dict(fresh, missing, "G/params", "ck.h5"); }),
                  "ck.h5 has no tensor /G/params/main.0.weight");

  gt::Checkpoint reshaped = ck;
  gt::Tensor& w = reshaped.groups["G/params"][0].second;
  w = w.reshaped({w.numel()});  // same count, another shape
  EXPECT_CONTAINS(user_error_message([&] { gt::import_state_dict(fresh, reshaped, "G/params", "ck.h5"); }),
                  "ck.h5: /G/params/main.0.weight is");
}

// ================================================================================================
// metrics.jsonl
// ================================================================================================

TEST(Metrics, LinesParseBackAsJsonWithStepFirstAndNullForNonFinite) {
  TempDir dir;
  std::string path = dir.file("metrics.jsonl");
  {
    gt::MetricsWriter writer(path);
    writer.write(10, {{"loss_d", 1.25}, {"loss_g", 0.1}});
    writer.write(20, {{"loss_d", std::nan("")}, {"lr", std::numeric_limits<double>::infinity()}});
  }
  {
    gt::MetricsWriter reopened(path);  // appends rather than truncating
    reopened.write(30, {{"images_per_s", 5000.5}});
  }
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 3u);
  for (const std::string& line : lines) EXPECT_EQ(line.rfind("{\"step\":", 0), 0u) << line;

  nlohmann::json first = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(first["step"], 10);
  EXPECT_DOUBLE_EQ(first["loss_d"].get<double>(), 1.25);
  EXPECT_DOUBLE_EQ(first["loss_g"].get<double>(), 0.1);  // full precision survives the text round trip
  nlohmann::json second = nlohmann::json::parse(lines[1]);
  EXPECT_TRUE(second["loss_d"].is_null());
  EXPECT_TRUE(second["lr"].is_null());
  EXPECT_EQ(nlohmann::json::parse(lines[2])["images_per_s"].get<double>(), 5000.5);
}

TEST(Metrics, DefaultWriterDropsLinesAndUnopenableFileIsRuntimeError) {
  gt::MetricsWriter disabled;
  EXPECT_NO_THROW(disabled.write(1, {{"x", 1.0}}));
  TempDir dir;
  std::string path = dir.file("no/dir/metrics.jsonl");
  try {
    gt::MetricsWriter writer(path);
    FAIL() << "expected an exception";
  } catch (const gt::RuntimeError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}
