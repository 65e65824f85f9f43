// GradientBucketer: buckets from the top of the flat gradients, started as backward makes them final.
#include "parallel/gradient_bucketer.h"

#include <algorithm>
#include <utility>

#include "core/error.h"

namespace gt {

GradientBucketer::GradientBucketer(Communicator& comm, float* grads, int64_t count, int64_t bucket_elems,
                                   GradientWire wire)
    : comm_(comm), grads_(grads), wire_(std::move(wire)) {
  GT_CHECK(count >= 0 && bucket_elems > 0, "gradient buckets of {} over {} values", bucket_elems, count);
  GT_CHECK(wire_.type == ElemType::f32 || (wire_.buffer && wire_.pack && wire_.unpack) || count == 0,
           "a {} gradient wire without its buffer or conversions", elem_type_name(wire_.type));
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
  if (wire_.type == ElemType::f32) {
    pending_.push_back(comm_.start_all_reduce(grads_ + begin, end - begin, ReduceOp::sum));
    return;
  }
  void* packed = static_cast<char*>(wire_.buffer) + begin * static_cast<int64_t>(elem_size(wire_.type));
  wire_.pack(grads_ + begin, packed, end - begin);
  pending_.push_back(comm_.start_all_reduce_bytes(packed, packed, end - begin, wire_.type, ReduceOp::sum));
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
  for (size_t b = 0; b < pending_.size(); ++b) {  // pending_[b] is bucket b's
    if (!pending_[b]->order_before_device_work()) {
      pending_[b]->wait();
      ++host_waits_;
    }
    if (wire_.type != ElemType::f32) {
      const auto [begin, end] = buckets_[b];
      wire_.unpack(static_cast<const char*>(wire_.buffer) + begin * static_cast<int64_t>(elem_size(wire_.type)),
                   grads_ + begin, end - begin);
    }
  }
  pending_.clear();
}

}  // namespace gt
