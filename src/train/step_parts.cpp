// StepParts: the bucketers, optimizer twins and synchronized batch norm of the one GAN step, built once for every engine.
#include "train/step_parts.h"

#include "parallel/sync_batchnorm.h"

namespace gt {

namespace {

// The wire format of one net's buckets: packed (bf16) only where there is something to move.
GradientWire wire_for(Net& net, Communicator& comm, StepOps& ops, ElemType type) {
  if (type == ElemType::f32 || comm.world_size() == 1) return {};
  return ops.gradient_wire(net.flat_size(), type);
}

}  // namespace

StepParts::StepParts(GanModels& host, Net& G, Net& D, Communicator& comm, StepOps& ops, const StepSettings& s)
    : reduce_g_(comm, G.flat_grads(), G.flat_size(), s.bucket_elems, wire_for(G, comm, ops, s.reduce_type)),
      reduce_d_(comm, D.flat_grads(), D.flat_size(), s.bucket_elems, wire_for(D, comm, ops, s.reduce_type)),
      opt_g_(make_net_optimizer(*host.opt_g, *host.G, G)),
      opt_d_(make_net_optimizer(*host.opt_d, *host.D, D)),
      step_{G, D, *opt_g_, *opt_d_, reduce_g_, reduce_d_, ops, s.clip_grad_norm, s.loss_scale, s.objective,
            s.accumulation} {
  if (s.sync_bn) {
    G.set_batch_stats_reducer(sum_over_ranks(comm), comm.world_size());
    D.set_batch_stats_reducer(sum_over_ranks(comm), comm.world_size());
  }
}

void StepParts::load_optimizers_from_host() {
  opt_g_->load_from_host();
  opt_d_->load_from_host();
}

void StepParts::sync_optimizers_to_host() {
  opt_g_->sync_to_host();
  opt_d_->sync_to_host();
}

}  // namespace gt
