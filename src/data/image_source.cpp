// Synthetic, Fashion-MNIST and HDF5 dataset image sources, pixel conversion, the epoch permutation and batch assembly.
#include "data/image_source.h"

#include <hdf5.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "config/config.h"
#include "core/rng.h"
#include "data/dataset_h5.h"
#include "io/idx.h"

namespace gt {

namespace {

// Procedural images: a few soft-edged discs of random colour on a dark gradient, keyed by the
// image index. Learnable structure, no files needed: for tests and throughput runs. Drawn in floats,
// then stored as bytes like a real data set, so that the float and the uint8 forms agree exactly.
class SyntheticSource final : public ImageSource {
 public:
  SyntheticSource(int64_t count, int channels, int resolution, uint64_t seed)
      : count_(count), channels_(channels), res_(resolution), seed_(seed) {}
  std::string describe() const override {
    return fmt::format("synthetic discs: {} images, {}x{}x{}", count_, channels_, res_, res_);
  }
  int64_t size() const override { return count_; }
  int channels() const override { return channels_; }
  int resolution() const override { return res_; }
  void get(int64_t index, float* out) const override {
    std::vector<uint8_t> hwc(static_cast<size_t>(channels_) * res_ * res_);
    render(index, out, hwc.data());  // out is the float scratch, then overwritten
    hwc_u8_to_chw_f32(hwc.data(), res_, res_, channels_, channels_, false, out);
  }
  bool has_u8() const override { return true; }
  void get_many_u8(std::span<const int64_t> indices, uint8_t* out) const override {
    const size_t per = static_cast<size_t>(channels_) * res_ * res_;
    std::vector<float> scratch(per);
    for (size_t i = 0; i < indices.size(); ++i) render(indices[i], scratch.data(), out + i * per);
  }

 private:
  // Draws image `index` as f32 [C, R, R] into chw, then rounds it to bytes (v + 1) * 127.5 into hwc.
  void render(int64_t index, float* chw, uint8_t* hwc) const {
    draw(index, chw);
    const int64_t plane = static_cast<int64_t>(res_) * res_;
    for (int64_t p = 0; p < plane; ++p)
      for (int c = 0; c < channels_; ++c) {
        const float byte = std::clamp((chw[c * plane + p] + 1.f) * 127.5f, 0.f, 255.f);
        hwc[p * channels_ + c] = static_cast<uint8_t>(std::lround(byte));
      }
  }
  void draw(int64_t index, float* out) const {
    float r[16];
    fill_uniform(r, 16, 0.f, 1.f, seed_, RngStream::synthetic, static_cast<uint64_t>(index) * 16);
    const int n_discs = 1 + static_cast<int>(r[0] * 3);
    const int hw = res_ * res_;
    for (int c = 0; c < channels_; ++c)
      for (int y = 0; y < res_; ++y)
        for (int x = 0; x < res_; ++x) out[c * hw + y * res_ + x] = -1.f + 0.5f * y / res_;
    for (int d = 0; d < n_discs; ++d) {
      const float* q = r + 1 + d * 5;
      const float cx = q[0] * res_, cy = q[1] * res_, rad = (0.1f + 0.2f * q[2]) * res_;
      for (int y = 0; y < res_; ++y)
        for (int x = 0; x < res_; ++x) {
          const float dist = std::sqrt((x - cx) * (x - cx) + (y - cy) * (y - cy));
          const float a = std::clamp(rad - dist, 0.f, 1.f);
          for (int c = 0; c < channels_; ++c) {
            const float colour = channels_ == 1 ? 0.4f + 0.6f * q[3] : (c == 0 ? q[3] : c == 1 ? q[4] : 1.f - q[3]);
            float& px = out[c * hw + y * res_ + x];
            px = px * (1 - a) + (2.f * colour - 1.f) * a;
          }
        }
    }
  }

  int64_t count_;
  int channels_, res_;
  uint64_t seed_;
};

// Fashion-MNIST 28x28 gray, padded by 2 black pixels to 32x32 (then upscaled by pixel repetition to
// the model's resolution); gray is repeated over 3 channels when the model wants RGB.
class FashionMnistSource final : public ImageSource {
 public:
  FashionMnistSource(const std::string& dir, int channels, int resolution) : channels_(channels), res_(resolution) {
    path_ = fashion_mnist_train_images(dir);
    images_ = read_idx_images(path_);
    if (images_.height != 28 || images_.width != 28)
      user_error("{} holds {}x{} images; Fashion-MNIST images are 28x28", path_, images_.height, images_.width);
    if (resolution % 32 != 0)
      user_error("model.resolution {} does not suit Fashion-MNIST (use 32, 64 or 128)", resolution);
  }
  std::string describe() const override {
    return fmt::format("Fashion-MNIST {}: {} images 28x28 -> {}x{}x{}", path_, images_.count, channels_, res_, res_);
  }
  int64_t size() const override { return images_.count; }
  int channels() const override { return channels_; }
  int resolution() const override { return res_; }
  void get(int64_t index, float* out) const override {
    std::vector<uint8_t> gray(static_cast<size_t>(res_) * res_);
    render(index, gray.data());
    hwc_u8_to_chw_f32(gray.data(), res_, res_, 1, channels_, false, out);
  }
  bool has_u8() const override { return true; }
  int u8_channels() const override { return 1; }
  void get_many_u8(std::span<const int64_t> indices, uint8_t* out) const override {
    for (size_t i = 0; i < indices.size(); ++i) render(indices[i], out + i * static_cast<size_t>(res_) * res_);
  }

 private:
  // Image `index` padded (black, byte 0, which converts to -1) and upscaled: gray [R, R].
  void render(int64_t index, uint8_t* gray) const {
    GT_CHECK(index >= 0 && index < images_.count, "image {} of {}", index, images_.count);
    const uint8_t* img = images_.pixels.data() + index * 28 * 28;
    const int scale = res_ / 32;
    for (int y = 0; y < res_; ++y)
      for (int x = 0; x < res_; ++x) {
        const int sy = y / scale - 2, sx = x / scale - 2;
        const bool inside = sy >= 0 && sy < 28 && sx >= 0 && sx < 28;
        gray[y * res_ + x] = inside ? img[sy * 28 + sx] : 0;
      }
  }

  std::string path_;
  IdxImages images_;
  int channels_, res_;
};

// A gantrain dataset file (docs/formats.md): uint8 HWC images converted on the fly.
class Hdf5Source final : public ImageSource {
 public:
  Hdf5Source(const std::string& path, int channels, int resolution)
      : reader_(DatasetReader::open_checked(path)), channels_(channels), res_(resolution) {
    check_dataset_fits_model(reader_.info(), channels, resolution);
  }
  std::string describe() const override {
    const DatasetInfo& info = reader_.info();
    std::string s = "HDF5 " + info.describe();
    if (info.channels == 1 && channels_ == 3) s += " (gray repeated over RGB)";
    return s;
  }
  int64_t size() const override { return reader_.size(); }
  int channels() const override { return channels_; }
  int resolution() const override { return res_; }
  void get(int64_t index, float* out) const override {
    std::vector<uint8_t> pixels(reader_.info().sample_bytes());
    reader_.read_range(index, 1, pixels.data());
    hwc_u8_to_chw_f32(pixels.data(), res_, res_, reader_.info().channels, channels_, false, out);
  }
  // Reads and converts in groups of about 1 MiB of pixels: the bytes are still in cache when they are
  // converted, and the staging memory stays small whatever the batch (and private to each caller).
  void get_many(std::span<const int64_t> indices, std::span<const uint8_t> flips, float* out) const override {
    GT_CHECK(flips.empty() || flips.size() == indices.size(), "{} flips for {} images", flips.size(), indices.size());
    const size_t in_bytes = reader_.info().sample_bytes();
    const int64_t out_floats = static_cast<int64_t>(channels_) * res_ * res_;
    const size_t group = std::clamp<size_t>((size_t{1} << 20) / in_bytes, 1, std::max<size_t>(indices.size(), 1));
    std::vector<uint8_t> staging(group * in_bytes);
    for (size_t first = 0; first < indices.size(); first += group) {
      const size_t n = std::min(group, indices.size() - first);
      reader_.read_images(indices.subspan(first, n), staging.data());
      for (size_t i = 0; i < n; ++i)
        hwc_u8_to_chw_f32(staging.data() + i * in_bytes, res_, res_, reader_.info().channels, channels_,
                          !flips.empty() && flips[first + i], out + static_cast<int64_t>(first + i) * out_floats);
    }
  }
  bool has_u8() const override { return true; }
  int u8_channels() const override { return reader_.info().channels; }
  void get_many_u8(std::span<const int64_t> indices, uint8_t* out) const override {
    reader_.read_images(indices, out);
  }
  bool background_safe() const override {
    hbool_t threadsafe = false;
    return H5is_library_threadsafe(&threadsafe) >= 0 && threadsafe;
  }

 private:
  DatasetReader reader_;
  int channels_, res_;
};

void mirror_rows(float* chw, int channels, int resolution) {
  for (int row = 0; row < channels * resolution; ++row)
    std::reverse(chw + static_cast<int64_t>(row) * resolution, chw + static_cast<int64_t>(row + 1) * resolution);
}

// v / 127.5 - 1 for every byte value, so conversion is one load per pixel.
constexpr std::array<float, 256> kByteToUnit = [] {
  std::array<float, 256> table{};
  for (int v = 0; v < 256; ++v) table[v] = static_cast<float>(v) / 127.5f - 1.f;
  return table;
}();

// One pass over the source pixels, writing OUT planes at once; channel counts as template arguments
// let the compiler unroll the inner loop. Memory-bound: about 0.5 ns per output float on one core.
template <int IN, int OUT>
void convert_rows(const uint8_t* hwc, int height, int width, bool flip, float* chw) {
  const int64_t plane = static_cast<int64_t>(height) * width;
  for (int y = 0; y < height; ++y) {
    const uint8_t* row = hwc + static_cast<int64_t>(y) * width * IN;
    float* dst = chw + static_cast<int64_t>(y) * width;
    for (int x = 0; x < width; ++x) {
      const uint8_t* px = row + (flip ? width - 1 - x : x) * IN;
      for (int c = 0; c < OUT; ++c) dst[c * plane + x] = kByteToUnit[px[IN == 1 ? 0 : c]];
    }
  }
}

}  // namespace

void ImageSource::get_many(std::span<const int64_t> indices, std::span<const uint8_t> flips, float* out) const {
  GT_CHECK(flips.empty() || flips.size() == indices.size(), "{} flips for {} images", flips.size(), indices.size());
  const int c = channels(), r = resolution();
  const int64_t per = static_cast<int64_t>(c) * r * r;
  for (size_t i = 0; i < indices.size(); ++i) {
    float* img = out + static_cast<int64_t>(i) * per;
    get(indices[i], img);
    if (!flips.empty() && flips[i]) mirror_rows(img, c, r);
  }
}

void ImageSource::get_many_u8(std::span<const int64_t>, uint8_t*) const {
  user_error("the image source {} has no uint8 form; read it as floats (the loader without output_u8)", describe());
}

bool flip_drawn(uint64_t seed, int64_t step, int64_t position) {
  float u;
  const uint64_t global_sample = static_cast<uint64_t>(step) * 4294967296ull + static_cast<uint64_t>(position);
  fill_uniform(&u, 1, 0.f, 1.f, seed, RngStream::flip, global_sample);
  return u >= 0.5f;
}

void hwc_u8_to_chw_f32(const uint8_t* hwc, int height, int width, int in_channels, int out_channels, bool flip,
                       float* chw) {
  GT_CHECK(in_channels == out_channels || (in_channels == 1 && out_channels == 3), "{} channels to {}", in_channels,
           out_channels);
  if (in_channels == 3) return convert_rows<3, 3>(hwc, height, width, flip, chw);
  if (in_channels == 1 && out_channels == 1) return convert_rows<1, 1>(hwc, height, width, flip, chw);
  if (in_channels == 1) return convert_rows<1, 3>(hwc, height, width, flip, chw);
  const int64_t plane = static_cast<int64_t>(height) * width;  // other channel counts: plain loops
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < out_channels; ++c)
        chw[c * plane + y * width + x] = kByteToUnit[hwc[(y * width + (flip ? width - 1 - x : x)) * in_channels + c]];
}

std::unique_ptr<ImageSource> open_image_source(const DataConfig& cfg, int channels, int resolution, uint64_t seed) {
  if (cfg.source == "synthetic") return std::make_unique<SyntheticSource>(cfg.synthetic_count, channels, resolution, seed);
  if (cfg.source == "fashion-mnist")
    return std::make_unique<FashionMnistSource>(cfg.path.empty() ? kFashionMnistDefaultDir : cfg.path, channels, resolution);
  if (cfg.source == "hdf5") {
    if (cfg.path.empty())
      user_error("data.source is hdf5 but data.path is empty; set data.path to a dataset file made by gantrain ingest");
    return std::make_unique<Hdf5Source>(cfg.path, channels, resolution);
  }
  user_error("data.source '{}' is not a known source (synthetic, fashion-mnist, hdf5)", cfg.source);
}

BatchPlan::BatchPlan(int64_t dataset_size, int64_t global_batch, uint64_t seed)
    : size_(dataset_size), batch_(global_batch), steps_per_epoch_(dataset_size / global_batch), seed_(seed) {
  if (steps_per_epoch_ < 1)
    user_error("train.batch_size {} is larger than the data set ({} images)", global_batch, dataset_size);
}

std::vector<int64_t> BatchPlan::indices(int64_t step, int64_t first, int64_t count) {
  const int64_t epoch = epoch_of(step);
  if (epoch != cached_epoch_) {
    order_.resize(size_);
    permutation(order_.data(), size_, seed_, static_cast<uint64_t>(epoch));
    cached_epoch_ = epoch;
  }
  const int64_t base = (step % steps_per_epoch_) * batch_ + first;
  return std::vector<int64_t>(order_.begin() + base, order_.begin() + base + count);
}

void load_batch(const ImageSource& src, BatchPlan& plan, int64_t step, int64_t first, int64_t count, bool flip,
                uint64_t seed, Tensor& out) {
  const int c = src.channels(), r = src.resolution();
  GT_CHECK(out.numel() == count * c * r * r, "batch tensor {} for {} images", out.str(), count);
  const std::vector<int64_t> idx = plan.indices(step, first, count);
  float* dst = out.f32();
  const int64_t per = static_cast<int64_t>(c) * r * r;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) {
    float* img = dst + i * per;
    src.get(idx[i], img);
    if (flip && flip_drawn(seed, step, first + i)) mirror_rows(img, c, r);
  }
}

}  // namespace gt
