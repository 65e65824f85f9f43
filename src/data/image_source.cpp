// Synthetic and Fashion-MNIST image sources, the epoch permutation and batch assembly.
#include "data/image_source.h"

#include <algorithm>
#include <cmath>

#include "config/config.h"
#include "core/rng.h"
#include "io/idx.h"

namespace gt {

namespace {

// Procedural images: a few soft-edged discs of random colour on a dark gradient, keyed by the
// image index. Learnable structure, no files needed: for tests and throughput runs.
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

 private:
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
    const uint8_t* img = images_.pixels.data() + index * 28 * 28;
    const int scale = res_ / 32, hw = res_ * res_;
    for (int y = 0; y < res_; ++y)
      for (int x = 0; x < res_; ++x) {
        const int sy = y / scale - 2, sx = x / scale - 2;
        const bool inside = sy >= 0 && sy < 28 && sx >= 0 && sx < 28;
        const float v = inside ? img[sy * 28 + sx] / 127.5f - 1.f : -1.f;
        for (int c = 0; c < channels_; ++c) out[c * hw + y * res_ + x] = v;
      }
  }

 private:
  std::string path_;
  IdxImages images_;
  int channels_, res_;
};

}  // namespace

std::unique_ptr<ImageSource> open_image_source(const DataConfig& cfg, int channels, int resolution, uint64_t seed) {
  if (cfg.source == "synthetic") return std::make_unique<SyntheticSource>(cfg.synthetic_count, channels, resolution, seed);
  if (cfg.source == "fashion-mnist")
    return std::make_unique<FashionMnistSource>(cfg.path.empty() ? kFashionMnistDefaultDir : cfg.path, channels, resolution);
  user_error("data.source '{}' is not a known source (synthetic, fashion-mnist)", cfg.source);
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
    if (!flip) continue;
    float u;
    const uint64_t global_sample = static_cast<uint64_t>(step) * 4294967296ull + static_cast<uint64_t>(first + i);
    fill_uniform(&u, 1, 0.f, 1.f, seed, RngStream::flip, global_sample);
    if (u < 0.5f) continue;
    for (int ch = 0; ch < c; ++ch)
      for (int y = 0; y < r; ++y) std::reverse(img + ch * r * r + y * r, img + ch * r * r + (y + 1) * r);
  }
}

}  // namespace gt
