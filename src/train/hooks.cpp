// HookList: calls the run's hooks in order on the ranks they run on, and holds rank-0-only hooks to leaving the loop's way alone.
#include "train/hooks.h"

#include "core/error.h"

namespace gt {

void HookList::begin(const RunBegin& run) {
  for (auto& h : hooks_)
    if (calls(*h)) h->begin(run);
}

HookVerdict HookList::after_step(const StepInfo& step, StopReason* why) {
  HookVerdict out = HookVerdict::go_on;
  for (auto& h : hooks_) {
    if (!calls(*h)) continue;
    const HookVerdict v = h->after_step(step);
    if (v == HookVerdict::go_on) continue;
    if (h->ranks() != HookRanks::every)
      runtime_error("hook '{}' runs on rank 0 alone but returned {} at step {}: only a hook every rank calls may "
                    "change the loop's way",
                    h->name(), v == HookVerdict::stop ? "stop" : "skip_rest", step.step);
    if (v == HookVerdict::skip_rest) return HookVerdict::skip_rest;
    if (out != HookVerdict::stop) {
      out = HookVerdict::stop;
      if (why) *why = h->stop_reason();
    }
  }
  return out;
}

void HookList::end(const RunEnd& run) {
  for (auto& h : hooks_)
    if (calls(*h)) h->end(run);
}

std::vector<std::string> HookList::names() const {
  std::vector<std::string> v;
  for (const auto& h : hooks_)
    if (calls(*h)) v.emplace_back(h->name());
  return v;
}

}  // namespace gt
