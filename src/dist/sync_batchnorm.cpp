// Synchronized batch norm: the per-channel sums of each BatchNorm2d go through one blocking all-reduce each.
#include "dist/sync_batchnorm.h"

#include "nn/layers.h"

namespace gt {

int synchronize_batch_norm(Sequential& net, Communicator* comm) {
  BatchStatsReducer reduce;
  if (comm) reduce = [comm](double* values, int64_t count) { comm->all_reduce(values, count, ReduceOp::sum); };
  int touched = 0;
  for (size_t i = 0; i < net.size(); ++i) touched += set_batch_stats_reducer(net.layer(i), reduce) ? 1 : 0;
  return touched;
}

}  // namespace gt
