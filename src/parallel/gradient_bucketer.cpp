// GradientBucketer: buckets from the top of the flat gradients, started as backward makes them final.
#include "parallel/gradient_bucketer.h"

#include <algorithm>

#include "core/error.h"

namespace gt {

GradientBucketer::GradientBucketer(Communicator& comm, float* grads, int64_t count, int64_t bucket_elems)
    : comm_(comm), grads_(grads) {
  GT_CHECK(count >= 0 && bucket_elems > 0, "gradient buckets of {} over {} values", bucket_elems, count);
  GT_CHECK(grads != nullptr || count == 0, "no gradient buffer for {} values", count);
  for (int64_t end = count; end > 0;) {
    const int64_t begin = std::max<int64_t>(end - bucket_elems, 0);
    buckets_.emplace_back(begin, end);
    end = begin;
  }
}

void GradientBucketer::arm() {
  GT_CHECK(!armed_, "GradientBucketer armed twice without finish()");
  armed_ = true;
  next_ = 0;
}

void GradientBucketer::start(size_t b) {
  const auto [begin, end] = buckets_[b];
  pending_.push_back(comm_.start_all_reduce(grads_ + begin, end - begin, ReduceOp::sum));
}

void GradientBucketer::on_final(int64_t lowest) {
  if (!armed_ || !active()) return;
  while (next_ < buckets_.size() && buckets_[next_].first >= lowest) start(next_++);
  // Libraries without a progress thread advance non-blocking collectives only inside their calls.
  for (auto& p : pending_) p->test();
}

void GradientBucketer::finish() {
  GT_CHECK(armed_, "GradientBucketer::finish() without arm()");
  armed_ = false;
  if (!active()) return;
  while (next_ < buckets_.size()) start(next_++);
  for (auto& p : pending_)
    if (!p->order_before_device_work()) {
      p->wait();
      ++host_waits_;
    }
  pending_.clear();
}

}  // namespace gt
