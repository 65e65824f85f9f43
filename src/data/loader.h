// The batch loader: one rank's shard of each global batch, read ahead on background threads into a bounded window.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "core/tensor.h"
#include "data/image_source.h"

namespace gt {

struct LoaderOptions {
  int64_t global_batch = 0;  // B: images per step over all ranks
  int rank = 0;              // this process's rank in [0, world_size)
  int world_size = 1;        // P
  int prefetch_batches = 4;  // K: batches read ahead; 0 = read in next(), on the caller's thread
  int threads = 1;           // T: batches read at the same time (at most K), each by its own thread
  bool flip = false;         // random horizontal flips keyed by (seed, step, global position)
  uint64_t seed = 0;         // keys the epoch order and the flips
  int64_t first_step = 0;    // the step the first next() returns (a resumed run starts past 0)
  int64_t end_step = -1;     // one past the last step to load; -1 = no end
  // Deliver the stored bytes, u8 [shard, R, R, source.u8_channels()] NHWC, unconverted and unflipped,
  // instead of f32 [shard, C, R, R]: for a consumer that converts on its own (see "uint8 batches").
  bool output_u8 = false;
  // Makes the loader's batch buffers (shape, dtype); empty = Tensor(shape, dtype). The GPU engine
  // returns page-locked host memory wrapped by Tensor::adopt, so that uploads need no staging copy.
  // With reading threads the constructor makes all K + 1 buffers on the caller's thread (where the
  // caller's CUDA device is current); a reading thread calls it only if the caller keeps batches
  // instead of passing them back to next().
  std::function<Tensor(const Shape&, DType)> allocate;
};

// Rank r of P gets positions [r*B/P, (r+1)*B/P) of each step's global batch, in the epoch order of
// BatchPlan (permutation(seed, epoch)): which image lands where depends on (seed, step, position)
// only, so P ranks together see exactly the batch one rank would, whatever K and T.
//
// Memory: at most K batches are ahead of the caller (being read or waiting) and one is held by the
// caller: (K + 1) * shard * C * R * R * 4 bytes, plus about 1 MiB of uint8 staging per thread for HDF5;
// with output_u8, (K + 1) * shard * R * R * u8_channels bytes and no staging.
//
// uint8 batches (output_u8): the same images in the same order as the float batches, as the source
// stores them. Converting image i of the batch that next() returned for `step` with
// hwc_u8_to_chw_f32(image, R, R, u8_channels, C, flip) gives the float batch bit for bit, where flip is
// false without options.flip and flip_drawn(seed, step, shard_first() + i) with it. On the GPU that is
// cuda::draw_flips(flips, shard_size(), seed, step, shard_first()) then cuda::u8_nhwc_to_f32_nchw.
//
// An exception thrown while reading (a file that went away, a read error) is rethrown by the next()
// that would have returned that batch. The destructor stops the threads after their current batch.
class Loader {
 public:
  // source must outlive the loader; with T > 1 its get_many is called from T threads at once.
  Loader(const ImageSource& source, const LoaderOptions& options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Moves the next step's shard (batch_shape(), batch_dtype()) into batch and returns the step. The
  // tensor that batch held before goes back to the loader for reuse when it has that shape and dtype
  // (keep no views of it); the batch is filled in place when the loader reads on the caller's thread.
  int64_t next(Tensor& batch);

  int64_t shard_first() const { return shard_first_; }  // first global batch position of this rank
  int64_t shard_size() const { return shard_size_; }
  Shape batch_shape() const;  // [shard, C, R, R]; with output_u8 [shard, R, R, u8_channels]
  DType batch_dtype() const { return opt_.output_u8 ? DType::u8 : DType::f32; }
  int threads() const { return static_cast<int>(threads_.size()); }  // 0: reads happen inside next()
  size_t memory_bytes_limit() const;  // the batches of the budget above (f32 or u8), for logs and docs
  double wait_seconds() const;        // time next() spent waiting for data so far

 private:
  struct Ready {
    Tensor images;
    std::exception_ptr error;
  };

  void fill(BatchPlan& plan, int64_t step, Tensor& out) const;  // reads one shard
  Tensor new_buffer() const;                                     // through opt_.allocate
  Tensor take_buffer();                                          // called with mutex_ held
  void produce();                                                // each reading thread's loop

  const ImageSource& source_;
  LoaderOptions opt_;
  int64_t shard_first_ = 0, shard_size_ = 0;
  int64_t next_step_ = 0;     // the step the next next() returns
  BatchPlan inline_plan_;     // for reads inside next(); each thread has its own (it caches an epoch)
  std::exception_ptr failed_;  // sticky: once reading failed, every later next() rethrows it
  double wait_seconds_ = 0;

  std::mutex mutex_;  // guards everything below
  std::condition_variable ready_cv_, work_cv_;
  int64_t next_claim_ = 0;  // the next step a thread may start reading
  int64_t taken_ = 0;       // steps handed to the caller so far (the window is [first+taken, +K))
  std::map<int64_t, Ready> ready_;
  std::vector<Tensor> spare_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace gt
