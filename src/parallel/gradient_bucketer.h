// GradientBucketer: one network's flat gradients summed over the ranks in buckets that start while its backward still runs, for both engines.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "parallel/communicator.h"

namespace gt {

// The buckets are contiguous ranges of about bucket_elems gradients, taken from the top of the flat
// buffer down: the order in which backward finishes them (the last layers' parameters sit at the top).
// A bucket starts (a non-blocking in-place all-reduce, sum) as soon as backward reports that everything
// from its lowest element up is final; buckets in flight are polled as backward goes on, so a library
// without a progress thread still moves them. finish() starts what is left and waits for all:
// afterwards every rank holds the same gradients.
//
// The buffer lives where comm's collectives take it: host memory for the MPI and local communicators,
// device memory for NCCL and the staged device communicator. With one rank nothing is moved.
//
// Gradients are summed, not averaged: each rank's loss is already scaled by its share of the global
// batch (local_n / global_n), so the sum is the gradient of the mean over the global batch.
//
// A wire format other than f32 (dist.reduce_precision bf16) packs each bucket into `wire.buffer` as it starts,
// all-reduces the packed values and unpacks them into the gradients when finish() has them: half the bytes,
// the gradients rounded to bfloat16 and summed in it. With one rank nothing is packed.
struct GradientWire {
  ElemType type = ElemType::f32;  // f32: the gradients themselves go out
  void* buffer = nullptr;         // count values of `type`, in the memory comm's collectives take
  std::function<void(const float* from, void* to, int64_t n)> pack;    // in the order of the engine's work
  std::function<void(const void* from, float* to, int64_t n)> unpack;  // after the bucket's all-reduce
};

class GradientBucketer {
 public:
  GradientBucketer(Communicator& comm, float* grads, int64_t count, int64_t bucket_elems, GradientWire wire = {});
  GradientBucketer(const GradientBucketer&) = delete;
  GradientBucketer& operator=(const GradientBucketer&) = delete;

  bool active() const { return comm_.world_size() > 1; }
  // The next backward is the last before the optimizer step (earlier ones, such as D's backward on
  // real images before the one on fakes, accumulate into the same gradients unreduced).
  void arm();
  // From BackwardOptions::on_final: gradients [lowest, count) are final.
  void on_final(int64_t lowest);
  // The callback to pass as BackwardOptions::on_final.
  std::function<void(int64_t)> hook() {
    return [this](int64_t lowest) { on_final(lowest); };
  }
  // Starts every bucket backward did not reach and waits for all (dist.timeout_s holds: a vanished
  // peer is an error, never a hang). With a device communicator (NCCL) the host does not wait: the
  // compute stream waits for each bucket on the device (PendingCollective::order_before_device_work), so
  // the optimizer is queued at once and runs when its gradients are summed; the engine's end-of-step wait
  // carries the deadline.
  void finish();
  size_t host_waits() const { return host_waits_; }  // buckets finish() waited for on the host, in all

  size_t bucket_count() const { return buckets_.size(); }
  std::pair<int64_t, int64_t> bucket_range(size_t b) const { return buckets_.at(b); }  // [begin, end)
  size_t started() const { return next_; }  // buckets started since arm()

 private:
  void start(size_t b);

  Communicator& comm_;
  float* grads_;
  GradientWire wire_;
  std::vector<std::pair<int64_t, int64_t>> buckets_;  // highest first
  std::vector<std::unique_ptr<PendingCollective>> pending_;
  size_t next_ = 0;
  size_t host_waits_ = 0;
  bool armed_ = false;
};

}  // namespace gt
