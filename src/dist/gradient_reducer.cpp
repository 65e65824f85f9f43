// Bucketed gradient all-reduce overlapped with backward (see gradient_reducer.h).
#include "dist/gradient_reducer.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace gt {

GradientReducer::GradientReducer(Communicator& comm, Sequential& net, int64_t bucket_bytes)
    : comm_(comm), net_(net), bucket_ready_after_(net.size(), -1) {
  GT_CHECK(bucket_bytes > 0, "bucket size {} bytes", bucket_bytes);
  Bucket current;
  auto close = [&] {
    if (current.params.empty()) return;
    bucket_ready_after_[current.layers.back()] = static_cast<int>(buckets_.size());
    current.packed.resize(static_cast<size_t>(current.numel));
    current.summed.resize(static_cast<size_t>(current.numel));
    buckets_.push_back(std::move(current));
    current = Bucket();
  };
  for (size_t i = net.size(); i-- > 0;) {
    std::vector<Param*> ps = net.layer(i).params();
    if (ps.empty()) continue;
    current.layers.push_back(i);
    for (Param* p : ps) {
      GT_CHECK(p->grad.same_shape(p->value), "parameter {} of layer {} has no gradient", p->name, i);
      current.params.push_back(p);
      current.numel += p->grad.numel();
    }
    if (current.numel * static_cast<int64_t>(sizeof(float)) >= bucket_bytes) close();
  }
  close();
  net_.set_backward_hook([this](size_t layer) { on_layer_done(layer); });
}

GradientReducer::~GradientReducer() { net_.set_backward_hook(nullptr); }

void GradientReducer::arm() {
  GT_CHECK(!armed_, "GradientReducer armed twice without finish()");
  for (const Bucket& b : buckets_) GT_CHECK(!b.pending, "a bucket is still in flight");
  armed_ = true;
}

void GradientReducer::start(Bucket& b) {
  float* dst = b.packed.data();
  for (Param* p : b.params) {
    std::memcpy(dst, p->grad.f32(), p->grad.nbytes());
    dst += p->grad.numel();
  }
  b.pending = comm_.start_all_reduce(b.packed.data(), b.summed.data(), b.numel, ReduceOp::sum);
}

void GradientReducer::on_layer_done(size_t layer) {
  if (!armed_) return;
  const int ready = bucket_ready_after_.at(layer);
  if (ready >= 0) start(buckets_[static_cast<size_t>(ready)]);
  // Libraries without a progress thread advance non-blocking collectives only inside their calls.
  for (Bucket& b : buckets_)
    if (b.pending) b.pending->test();
}

void GradientReducer::finish() {
  GT_CHECK(armed_, "GradientReducer::finish() without arm()");
  for (Bucket& b : buckets_)
    if (!b.pending) start(b);
  for (Bucket& b : buckets_) {
    b.pending->wait();
    b.pending.reset();
    const float* src = b.summed.data();
    for (Param* p : b.params) {
      std::memcpy(p->grad.f32(), src, p->grad.nbytes());
      src += p->grad.numel();
    }
  }
  armed_ = false;
}

}  // namespace gt
