// The prefetching shard loader: reading threads fill batch buffers ahead of the training loop, in step order.
#include "data/loader.h"

#include <algorithm>
#include <chrono>

namespace gt {

Loader::Loader(const ImageSource& source, const LoaderOptions& options)
    : source_(source), opt_(options), inline_plan_(source.size(), options.global_batch, options.seed) {
  GT_CHECK(opt_.world_size >= 1 && opt_.rank >= 0 && opt_.rank < opt_.world_size, "rank {} of {}", opt_.rank,
           opt_.world_size);
  GT_CHECK(opt_.prefetch_batches >= 0 && opt_.threads >= 1, "prefetch_batches {}, threads {}", opt_.prefetch_batches,
           opt_.threads);
  GT_CHECK(opt_.first_step >= 0, "first_step {}", opt_.first_step);
  if (opt_.output_u8 && !source_.has_u8())
    user_error("uint8 batches (LoaderOptions::output_u8) need a source that stores bytes; {} has no uint8 form",
               source_.describe());
  if (opt_.global_batch < opt_.world_size)
    user_error("train.batch_size {} is smaller than the number of ranks {}; every rank needs at least one image",
               opt_.global_batch, opt_.world_size);
  shard_first_ = opt_.rank * opt_.global_batch / opt_.world_size;
  shard_size_ = (opt_.rank + 1) * opt_.global_batch / opt_.world_size - shard_first_;
  next_step_ = next_claim_ = opt_.first_step;
  if (opt_.prefetch_batches == 0 || !source_.background_safe()) return;
  const int n_threads = std::min(opt_.threads, opt_.prefetch_batches);  // more could only wait for a free slot
  if (opt_.allocate)
    for (int i = 0; i <= opt_.prefetch_batches; ++i) spare_.push_back(new_buffer());
  for (int t = 0; t < n_threads; ++t) threads_.emplace_back([this] { produce(); });
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

Shape Loader::batch_shape() const {
  const int64_t r = source_.resolution();
  if (opt_.output_u8) return {shard_size_, r, r, source_.u8_channels()};
  return {shard_size_, source_.channels(), r, r};
}

size_t Loader::memory_bytes_limit() const {
  const size_t batch_bytes = static_cast<size_t>(shape_numel(batch_shape())) * dtype_size(batch_dtype());
  return (threads_.empty() ? 1 : static_cast<size_t>(opt_.prefetch_batches) + 1) * batch_bytes;
}

double Loader::wait_seconds() const { return wait_seconds_; }

void Loader::fill(BatchPlan& plan, int64_t step, Tensor& out) const {
  const std::vector<int64_t> indices = plan.indices(step, shard_first_, shard_size_);
  if (opt_.output_u8) return source_.get_many_u8(indices, out.u8());  // flips are the consumer's
  std::vector<uint8_t> flips;
  if (opt_.flip) {
    flips.resize(indices.size());
    for (int64_t i = 0; i < shard_size_; ++i) flips[i] = flip_drawn(opt_.seed, step, shard_first_ + i);
  }
  source_.get_many(indices, flips, out.f32());
}

Tensor Loader::new_buffer() const {
  if (!opt_.allocate) return Tensor(batch_shape(), batch_dtype());
  Tensor t = opt_.allocate(batch_shape(), batch_dtype());
  GT_CHECK(t.defined() && t.shape() == batch_shape() && t.dtype() == batch_dtype() && t.device() == Device::cpu,
           "LoaderOptions::allocate made {} for a {}{} batch", t.defined() ? t.str() : "nothing",
           dtype_name(batch_dtype()), shape_str(batch_shape()));
  return t;
}

Tensor Loader::take_buffer() {
  if (spare_.empty()) return new_buffer();
  Tensor t = std::move(spare_.back());
  spare_.pop_back();
  return t;
}

void Loader::produce() {
  BatchPlan plan(source_.size(), opt_.global_batch, opt_.seed);
  const auto past_end = [&] { return opt_.end_step >= 0 && next_claim_ >= opt_.end_step; };
  for (;;) {
    int64_t step;
    Ready item;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      // The window: steps [first + taken, first + taken + K) may be read before the caller takes them.
      work_cv_.wait(lock, [&] {
        return stopping_ || past_end() || next_claim_ < opt_.first_step + taken_ + opt_.prefetch_batches;
      });
      if (stopping_ || past_end()) return;
      step = next_claim_++;
      item.images = take_buffer();
    }
    try {
      fill(plan, step, item.images);
    } catch (...) {
      item.error = std::current_exception();
    }
    const bool failed = item.error != nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.emplace(step, std::move(item));
      if (failed) stopping_ = true;  // no new reads; the steps before this one still arrive
    }
    ready_cv_.notify_one();
    if (failed) {
      work_cv_.notify_all();
      return;
    }
  }
}

int64_t Loader::next(Tensor& batch) {
  if (failed_) std::rethrow_exception(failed_);
  GT_CHECK(opt_.end_step < 0 || next_step_ < opt_.end_step, "next() past the loader's last step {}",
           opt_.end_step - 1);
  const bool reusable = batch.defined() && batch.shape() == batch_shape() && batch.dtype() == batch_dtype() &&
                        batch.device() == Device::cpu;
  if (threads_.empty()) {
    if (!reusable) batch = new_buffer();
    try {
      fill(inline_plan_, next_step_, batch);
    } catch (...) {
      failed_ = std::current_exception();
      throw;
    }
    return next_step_++;
  }
  Ready item;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    const auto t0 = std::chrono::steady_clock::now();
    ready_cv_.wait(lock, [&] { return ready_.count(next_step_) > 0; });
    wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto it = ready_.find(next_step_);
    item = std::move(it->second);
    ready_.erase(it);
    ++taken_;
    if (reusable && !item.error) spare_.push_back(std::move(batch));
  }
  work_cv_.notify_one();
  if (item.error) {
    failed_ = item.error;
    std::rethrow_exception(failed_);
  }
  batch = std::move(item.images);
  return next_step_++;
}

}  // namespace gt
