// Image sources for training: a random-access set of images delivered as floats in [-1, 1] (or as stored bytes), and the batch order.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace gt {

struct DataConfig;

class ImageSource {
 public:
  virtual ~ImageSource() = default;
  virtual std::string describe() const = 0;
  virtual int64_t size() const = 0;
  virtual int channels() const = 0;
  virtual int resolution() const = 0;
  // Writes image `index` as f32 [C, R, R] in [-1, 1] into out.
  virtual void get(int64_t index, float* out) const = 0;
  // Writes images `indices` as f32 [n, C, R, R] into out, image i mirrored left-right where flips[i]
  // (flips is empty or as long as indices). Sources backed by files override it to batch their reads;
  // the default calls get() one image at a time, on the calling thread.
  virtual void get_many(std::span<const int64_t> indices, std::span<const uint8_t> flips, float* out) const;
  // The stored form, for consumers that convert on their own (the GPU engine uploads bytes, a
  // quarter of the floats): get_many_u8 writes images `indices` as uint8 [n, R, R, u8_channels()]
  // (HWC, unflipped) such that hwc_u8_to_chw_f32(image, R, R, u8_channels(), channels(), flip) gives
  // exactly get()'s floats. u8_channels() is channels(), or 1 where a gray source feeds an RGB model.
  // Sources without a uint8 form keep has_u8() false; the default get_many_u8 then raises UserError.
  virtual bool has_u8() const { return false; }
  virtual int u8_channels() const { return channels(); }
  virtual void get_many_u8(std::span<const int64_t> indices, uint8_t* out) const;
  // False where get/get_many must not run on a thread of its own beside other work of the process
  // (an HDF5 library built without thread safety); the loader then reads on the caller's thread.
  virtual bool background_safe() const { return true; }
};

// Builds the source named by data.source, shaped for the model (channels, resolution). Problems with
// the data (missing files, wrong sizes, an HDF5 dataset that does not fit the model) raise UserError
// naming the file.
std::unique_ptr<ImageSource> open_image_source(const DataConfig& cfg, int channels, int resolution, uint64_t seed);

// Which samples a step uses: epoch order is permutation(seed, epoch); step k of an epoch takes
// positions [k*B, (k+1)*B) (the incomplete last batch is dropped). Depends only on (seed, step, B).
class BatchPlan {
 public:
  BatchPlan(int64_t dataset_size, int64_t global_batch, uint64_t seed);
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  int64_t epoch_of(int64_t step) const { return step / steps_per_epoch_; }
  // Dataset indices of global batch positions [first, first + count) of `step`.
  std::vector<int64_t> indices(int64_t step, int64_t first, int64_t count);

 private:
  int64_t size_, batch_, steps_per_epoch_;
  uint64_t seed_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> order_;
};

// Whether the image at global batch position `position` of `step` is flipped (when flips are on): a
// draw keyed by (seed, step, position) only, so it does not depend on rank count or thread.
bool flip_drawn(uint64_t seed, int64_t step, int64_t position);

// One image from uint8 HWC (in_channels) to f32 CHW (out_channels) in [-1, 1] (v / 127.5 - 1),
// mirrored left-right if flip. in_channels 1 with out_channels 3 repeats the gray value.
void hwc_u8_to_chw_f32(const uint8_t* hwc, int height, int width, int in_channels, int out_channels, bool flip,
                       float* chw);

// Fills out [count, C, R, R] with the images of global batch positions [first, first+count) of step,
// flipping horizontally where the flip draw for the global sample index says so (if flip).
void load_batch(const ImageSource& src, BatchPlan& plan, int64_t step, int64_t first, int64_t count, bool flip,
                uint64_t seed, Tensor& out);

}  // namespace gt
