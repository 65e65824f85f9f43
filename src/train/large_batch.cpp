// The large-batch plan: the per-image memory estimate, the choice of micro-batch and its agreement over the ranks.
#include "train/large_batch.h"

#include <fmt/format.h>

#include "core/error.h"
#include "nn/layers.h"
#include "parallel/agreement.h"
#include "parallel/communicator.h"

namespace gt {

namespace {

// Elements of a layer's outputs for input shape s: a Fade (Progressive GAN) keeps both branches' outputs as well.
double layer_elements(Layer& layer, const Shape& s) {
  double total = static_cast<double>(shape_numel(layer.output_shape(s)));
  if (auto* fade = dynamic_cast<Fade*>(&layer))
    for_each_branch_layer(*fade, s, [&](Layer& inner, const Shape& in) { total += layer_elements(inner, in); });
  return total;
}

// Elements of every layer output for one input of per-sample shape `in`.
double activation_elements(Sequential& net, const Shape& per_sample_in) {
  Shape s{1};
  s.insert(s.end(), per_sample_in.begin(), per_sample_in.end());
  double total = static_cast<double>(shape_numel(s));
  for (size_t i = 0; i < net.size(); ++i) {
    total += layer_elements(net.layer(i), s);
    s = net.layer(i).output_shape(s);
  }
  return total;
}

std::string mib(double bytes) { return fmt::format("{:.1f} MiB", bytes / 1048576.0); }

}  // namespace

double step_bytes_per_image(Sequential& G, Sequential& D, int nz, const GanObjective& objective) {
  const double g = activation_elements(G, {nz, 1, 1});
  const Shape out = G.output_shape({1, nz, 1, 1});
  const Shape image(out.begin() + 1, out.end());
  const double d = activation_elements(D, image);
  // Kept activations and their gradients: G's through the step, one D pass at a time; the penalty's pass
  // also keeps D's output gradients, tangents and the second pass's adjoints.
  const double passes = 2.0 * g + 2.0 * d + (objective.gp_weight > 0 ? 3.0 * d : 0.0);
  return 4.0 * passes;
}

std::string LargeBatchPlan::describe() const {
  std::string s = fmt::format("batch {} = {} rank{} x {}", global_batch, world, world > 1 ? "s" : "", local_batch);
  if (accumulation > 1)
    s += fmt::format(" = {} micro-batches of {} accumulated per update", accumulation, micro_batch);
  else
    s += " in one pass";
  s += fmt::format(" ({}; about {} per micro-batch", basis, mib(bytes_per_image * static_cast<double>(micro_batch)));
  if (budget_bytes > 0) s += fmt::format(" of a {} budget", mib(budget_bytes));
  return s + ")";
}

LargeBatchPlan plan_large_batch(int64_t global_batch, int world, int64_t micro_batch, double budget_bytes,
                                double bytes_per_image, const std::string& budget_source, int64_t granule) {
  GT_CHECK(world >= 1 && global_batch >= 1, "plan_large_batch: batch {} over {} ranks", global_batch, world);
  if (global_batch % world != 0)
    user_error("train.batch_size {} does not divide over {} ranks: every rank takes an equal share of the global "
               "batch, so use a multiple of {} (e.g. {})",
               global_batch, world, world, (global_batch + world - 1) / world * world);
  LargeBatchPlan p;
  p.global_batch = global_batch;
  p.world = world;
  p.local_batch = global_batch / world;
  p.bytes_per_image = bytes_per_image;
  p.budget_bytes = budget_bytes;
  if (granule > 1 && p.local_batch % granule != 0)
    user_error("a rank's share of the batch, {} (batch {} over {} rank{}), is not a multiple of model.mbstd_group {}: "
               "the critic's minibatch standard deviation takes whole groups on every rank",
               p.local_batch, global_batch, world, world > 1 ? "s" : "", granule);
  if (micro_batch > 0 && granule > 1 && micro_batch % granule != 0)
    user_error("train.micro_batch {} is not a multiple of model.mbstd_group {}: every micro-batch must hold whole "
               "groups of the critic's minibatch standard deviation",
               micro_batch, granule);
  if (micro_batch > 0) {
    if (p.local_batch % micro_batch != 0) {
      int64_t below = micro_batch;
      while (p.local_batch % below != 0) --below;
      user_error("train.micro_batch {} does not divide a rank's share of the batch, {} (train.batch_size {} over {} "
                 "rank{}): micro-batches must split it evenly, e.g. {}",
                 micro_batch, p.local_batch, global_batch, world, world > 1 ? "s" : "", below);
    }
    p.micro_batch = micro_batch;
    p.basis = "train.micro_batch";
  } else if (budget_bytes > 0) {
    if (bytes_per_image > budget_bytes)
      user_error("train.memory_mb: a budget of {} ({}) is below what one image of this model takes in a step, about "
                 "{}; raise it, or set train.micro_batch",
                 mib(budget_bytes), budget_source, mib(bytes_per_image));
    p.micro_batch = 1;
    p.micro_batch = granule;
    for (int64_t m = p.local_batch; m >= granule; --m)
      if (p.local_batch % m == 0 && m % granule == 0 && bytes_per_image * static_cast<double>(m) <= budget_bytes) {
        p.micro_batch = m;
        break;
      }
    p.basis = fmt::format("the largest that fits {}", budget_source);
  } else {
    p.micro_batch = p.local_batch;
    p.basis = "no memory budget";
  }
  p.accumulation = p.local_batch / p.micro_batch;
  return p;
}

LargeBatchPlan plan_progan_phase(const ProganSpec& spec, const ProganPhase& phase, const GanObjective& objective,
                                 int world, int64_t micro_batch, double budget_bytes, const std::string& budget_source,
                                 const std::string& batch_key) {
  Sequential G = make_progan_generator(spec, phase.resolution, phase.fading);
  Sequential D = make_progan_discriminator(spec, phase.resolution, phase.fading);
  const double per_image = step_bytes_per_image(G, D, spec.nz, objective);
  try {
    return plan_large_batch(phase.batch, world, micro_batch, budget_bytes, per_image, budget_source, spec.mbstd_group);
  } catch (const UserError& e) {
    user_error("the {} phase (batch {} from {}): {}", phase.name(), phase.batch, batch_key, e.what());
  }
}

LargeBatchPlan agree_large_batch(const LargeBatchPlan& mine, Communicator& comm) {
  LargeBatchPlan p = mine;
  int64_t v[2] = {mine.micro_batch, static_cast<int64_t>(mine.budget_bytes)};
  comm.broadcast(v, 2, 0);
  p.micro_batch = v[0];
  p.budget_bytes = static_cast<double>(v[1]);
  p.basis = broadcast_string(comm, mine.basis, 0);
  GT_CHECK(p.micro_batch >= 1 && p.local_batch % p.micro_batch == 0, "rank 0's micro-batch {} for a share of {}",
           p.micro_batch, p.local_batch);
  p.accumulation = p.local_batch / p.micro_batch;
  return p;
}

}  // namespace gt
