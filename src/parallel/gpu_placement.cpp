// Rank-to-GPU placement over the whole job: gathers each rank's view, groups ranks by node, checks one rank per GPU for NCCL.
#include "parallel/gpu_placement.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

#include "core/error.h"
#include "parallel/agreement.h"

namespace gt {

namespace {

// Views travel in fixed-size slots: a host name (<= 255 bytes) and a CUDA_VISIBLE_DEVICES list fit.
constexpr int64_t kViewSlotBytes = 1024;

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    const size_t at = text.find(sep, start);
    parts.push_back(text.substr(start, at == std::string::npos ? std::string::npos : at - start));
    if (at == std::string::npos) return parts;
    start = at + 1;
  }
}

int parse_int(const std::string& field, const std::string& text) {
  char* end = nullptr;
  const long v = std::strtol(field.c_str(), &end, 10);
  GT_CHECK(!field.empty() && end && *end == '\0', "malformed device view '{}'", text);
  return static_cast<int>(v);
}

// The physical GPUs a process can use: its CUDA_VISIBLE_DEVICES entries, or ordinals when unset.
std::vector<std::string> usable_devices(const NodeProcess& p) {
  std::vector<std::string> out;
  const int count = p.visible ? std::min<int>(p.device_count, static_cast<int>(p.visible->size())) : p.device_count;
  for (int i = 0; i < count; ++i) out.push_back(p.visible ? (*p.visible)[static_cast<size_t>(i)] : std::to_string(i));
  return out;
}

void check_node_has_enough_gpus(const std::string& host, const std::vector<const RankDeviceView*>& ranks) {
  std::set<std::string> gpus;
  for (const RankDeviceView* r : ranks)
    for (const std::string& d : usable_devices(r->process)) gpus.insert(d);
  if (gpus.empty() || ranks.size() <= gpus.size()) return;  // no GPU at all: assign_devices says which rank
  user_error("node {} runs {} ranks but they see only {} GPU{} ({}): NCCL allows one rank per GPU; start at most {} "
             "rank{} on this node (mpirun --map-by ppr:{}:node, srun --ntasks-per-node={}), or use dist.backend: mpi, "
             "which lets ranks share a GPU",
             host, ranks.size(), gpus.size(), gpus.size() == 1 ? "" : "s", fmt::join(gpus, ", "), gpus.size(),
             gpus.size() == 1 ? "" : "s", gpus.size(), gpus.size());
}

}  // namespace

std::string encode_device_view(const RankDeviceView& view) {
  GT_CHECK(view.host.find('\t') == std::string::npos, "host name with a tab: '{}'", view.host);
  std::string visible = "-";  // unset
  if (view.process.visible) visible = fmt::format("={}", fmt::join(*view.process.visible, ","));
  return fmt::format("{}\t{}\t{}\t{}", view.host, view.process.local_rank, view.process.device_count, visible);
}

RankDeviceView decode_device_view(const std::string& text) {
  const std::vector<std::string> f = split(text, '\t');
  GT_CHECK(f.size() == 4 && !f[3].empty() && (f[3][0] == '-' || f[3][0] == '='), "malformed device view '{}'", text);
  RankDeviceView v;
  v.host = f[0];
  v.process.local_rank = parse_int(f[1], text);
  v.process.device_count = parse_int(f[2], text);
  if (f[3][0] == '=') {
    v.process.visible.emplace();
    if (f[3].size() > 1) *v.process.visible = split(f[3].substr(1), ',');
  }
  return v;
}

std::vector<DeviceAssignment> place_ranks_on_devices(const std::vector<RankDeviceView>& ranks, bool exclusive) {
  // Nodes in order of their first rank, so that the first problem reported is the same on every rank.
  std::vector<std::string> node_order;
  std::map<std::string, std::vector<size_t>> node_ranks;
  for (size_t r = 0; r < ranks.size(); ++r) {
    auto& members = node_ranks[ranks[r].host];
    if (members.empty()) node_order.push_back(ranks[r].host);
    members.push_back(r);
  }
  std::vector<DeviceAssignment> out(ranks.size());
  for (const std::string& host : node_order) {
    const std::vector<size_t>& members = node_ranks[host];
    std::vector<const RankDeviceView*> views;
    std::vector<NodeProcess> processes;
    for (size_t r : members) {
      views.push_back(&ranks[r]);
      processes.push_back(ranks[r].process);
    }
    if (exclusive) check_node_has_enough_gpus(host, views);
    std::vector<DeviceAssignment> node_out;
    try {
      node_out = assign_devices(processes, exclusive);
    } catch (const UserError& e) {
      user_error("node {}: {}", host, e.what());
    }
    for (size_t i = 0; i < members.size(); ++i) out[members[i]] = node_out[i];
  }
  return out;
}

std::vector<DeviceAssignment> gather_and_place(Communicator& comm, const RankDeviceView& mine, bool exclusive) {
  const std::string text = encode_device_view(mine);
  GT_CHECK(static_cast<int64_t>(text.size()) < kViewSlotBytes, "device view longer than {} bytes: '{}'",
           kViewSlotBytes, text);
  std::vector<uint8_t> slot(kViewSlotBytes, 0);
  std::memcpy(slot.data(), text.data(), text.size());
  std::vector<uint8_t> all(static_cast<size_t>(kViewSlotBytes * comm.world_size()));
  comm.all_gather(slot.data(), all.data(), kViewSlotBytes);
  std::vector<RankDeviceView> views;
  for (int r = 0; r < comm.world_size(); ++r)
    views.push_back(decode_device_view(reinterpret_cast<const char*>(&all[static_cast<size_t>(r) * kViewSlotBytes])));
  // Every rank holds the same views, so each reaches the same verdict; run_agreed makes rank 0 alone report it.
  std::vector<DeviceAssignment> placed;
  run_agreed(comm, [&] { placed = place_ranks_on_devices(views, exclusive); });
  return placed;
}

}  // namespace gt
