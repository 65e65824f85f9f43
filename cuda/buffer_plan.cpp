// plan_in_place: buffers followed through a forward; an activation overwrites its input only when nothing keeps it.
#include "cuda/buffer_plan.h"

#include <cstddef>
#include <set>

namespace gt::cuda {

std::vector<bool> plan_in_place(const std::vector<BufferUse>& ops) {
  std::vector<bool> in_place(ops.size(), false);
  constexpr int kCallers = 0;  // the buffer forward() was given
  int cur = kCallers, next = 1;
  std::set<int> kept;  // buffers some earlier op reads in its backward
  for (std::size_t i = 0; i < ops.size(); ++i) {
    switch (ops[i]) {
      case BufferUse::view:
        in_place[i] = true;
        break;
      case BufferUse::activation_keeps_output:
        if (cur != kCallers && kept.count(cur) == 0) {
          in_place[i] = true;
        } else {
          cur = next++;
        }
        kept.insert(cur);
        break;
      case BufferUse::fresh_keeps_input:
        kept.insert(cur);
        cur = next++;
        break;
      case BufferUse::fresh:
        cur = next++;
        break;
    }
  }
  return in_place;
}

}  // namespace gt::cuda
