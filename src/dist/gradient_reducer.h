// Sums one network's gradients over the ranks in buckets that start while its backward is still running.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "dist/communicator.h"
#include "nn/sequential.h"

namespace gt {

// Buckets hold whole layers, taken from the last layer to the first (the order backward finishes
// them), each closed once it reaches bucket_bytes. A bucket is ready when the backward of its first
// (lowest) layer returns; the reducer, called through Sequential's backward hook, then copies its
// gradients into one flat buffer and starts a non-blocking all-reduce (sum), and polls the buckets in
// flight after every later layer so MPI makes progress while backward computes. finish() waits for
// all and writes the sums back: afterwards every rank holds the same gradients.
//
// Gradients are summed, not averaged: each rank's loss is already scaled by its share of the global
// batch (local_n / global_n), so the sum is the gradient of the mean over the global batch.
class GradientReducer {
 public:
  GradientReducer(Communicator& comm, Sequential& net, int64_t bucket_bytes);
  ~GradientReducer();  // removes the hook; net must outlive the reducer
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // The next backward of net is the last one before the optimizer step (earlier ones, such as D's
  // backward on real images before the one on fakes, accumulate into the same gradients unreduced).
  void arm();
  // Waits for every bucket (starting any the backward did not reach) and writes the sums back.
  void finish();

  size_t bucket_count() const { return buckets_.size(); }
  // Layers of bucket b, highest first; for tests and logs.
  std::vector<size_t> bucket_layers(size_t b) const { return buckets_.at(b).layers; }
  int64_t bucket_numel(size_t b) const { return buckets_.at(b).numel; }

 private:
  struct Bucket {
    std::vector<size_t> layers;  // highest index first
    std::vector<Param*> params;
    int64_t numel = 0;
    std::vector<float> packed, summed;  // out of place: MPI libraries reduce faster that way
    std::unique_ptr<PendingCollective> pending;
  };

  void on_layer_done(size_t layer);
  void start(Bucket& b);

  Communicator& comm_;
  Sequential& net_;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_ready_after_;  // per layer: the bucket whose last layer to finish it is, or -1
  bool armed_ = false;
};

}  // namespace gt
