// state_dict <-> checkpoint groups.
#include "train/model_state.h"

namespace gt {

namespace {

void load_into(Tensor& dst, const Checkpoint& ckpt, const std::string& group, const std::string& name,
               const std::string& source) {
  const Tensor* src = ckpt.find(group, name);
  if (!src) user_error("{} has no tensor /{}/{}", source, group, name);
  // The shape, not only the count: a [48] stored for a [4, 3, 2, 2] weight is another model.
  if (src->shape() != dst.shape() || src->dtype() != dst.dtype())
    user_error("{}: /{}/{} is {} but the model expects {}", source, group, name, src->str(), dst.str());
  dst.copy_from(*src);
}

// Optimizer state is named "<param>/<kind>"; stored as /<group>/<kind>/<param> so HDF5 paths stay flat.
std::pair<std::string, std::string> split_state_name(const std::string& group, const std::string& name) {
  const size_t slash = name.rfind('/');
  GT_CHECK(slash != std::string::npos, "optimizer state name '{}' has no '/'", name);
  return {group + "/" + name.substr(slash + 1), name.substr(0, slash)};
}

}  // namespace

void export_state_dict(Sequential& net, const std::string& group, TensorGroups& groups) {
  auto& out = groups[group];
  for (auto& p : net.named_params()) out.emplace_back(p.name, p.param->value.clone());
  for (auto& b : net.named_buffers()) out.emplace_back(b.name, b.buffer->value.clone());
}

void import_state_dict(Sequential& net, const Checkpoint& ckpt, const std::string& group, const std::string& source) {
  for (auto& p : net.named_params()) load_into(p.param->value, ckpt, group, p.name, source);
  for (auto& b : net.named_buffers()) load_into(b.buffer->value, ckpt, group, b.name, source);
}

void export_optimizer(Optimizer& opt, const std::string& group, TensorGroups& groups) {
  for (auto& s : opt.state()) {
    auto [g, n] = split_state_name(group, s.name);
    groups[g].emplace_back(n, s.tensor->clone());
  }
  Tensor step({}, DType::i64);
  step.i64()[0] = opt.step_count();
  groups[group].emplace_back("step", step);
}

void import_optimizer(Optimizer& opt, const Checkpoint& ckpt, const std::string& group, const std::string& source) {
  for (auto& s : opt.state()) {
    auto [g, n] = split_state_name(group, s.name);
    load_into(*s.tensor, ckpt, g, n, source);
  }
  Tensor step({}, DType::i64);
  load_into(step, ckpt, group, "step", source);
  opt.set_step_count(step.i64()[0]);
}

}  // namespace gt
