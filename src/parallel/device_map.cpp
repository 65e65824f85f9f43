// Local rank detection and the rank-to-GPU mapping (pure logic; the CUDA backend feeds it device counts).
#include "parallel/device_map.h"

#include <cctype>
#include <cstdlib>
#include <map>

#include "core/error.h"

namespace gt {

namespace {

std::optional<int> parse_non_negative(const char* text) {
  if (!text || !*text) return std::nullopt;
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (!end || *end != '\0' || v < 0 || v > 1 << 20) return std::nullopt;
  return static_cast<int>(v);
}

std::string trimmed(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

bool valid_device_entry(const std::string& e) {
  if (e.rfind("GPU-", 0) == 0 || e.rfind("MIG-", 0) == 0) return e.size() > 4;
  return parse_non_negative(e.c_str()).has_value();
}

}  // namespace

std::optional<int> local_rank_from_env(const EnvLookup& env) {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"})
    if (auto r = parse_non_negative(env(var))) return r;
  return std::nullopt;
}

std::optional<std::vector<std::string>> cuda_visible_devices(const EnvLookup& env) {
  const char* text = env("CUDA_VISIBLE_DEVICES");
  if (!text) return std::nullopt;
  std::vector<std::string> out;
  const std::string all = text;
  size_t start = 0;
  while (start <= all.size()) {
    const size_t comma = all.find(',', start);
    const std::string entry = trimmed(all.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (!valid_device_entry(entry)) break;  // CUDA ignores the first invalid entry and everything after it
    out.push_back(entry);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::vector<DeviceAssignment> assign_devices(const std::vector<NodeProcess>& node, bool exclusive) {
  std::vector<DeviceAssignment> out;
  std::map<std::string, std::vector<int>> ranks_on;
  for (const NodeProcess& p : node) {
    int count = p.device_count;
    if (p.visible) count = std::min<int>(count, static_cast<int>(p.visible->size()));
    if (count <= 0)
      user_error("local rank {} sees no GPU{}", p.local_rank,
                 p.visible ? " (CUDA_VISIBLE_DEVICES hides every device)" : "");
    DeviceAssignment a;
    a.ordinal = p.local_rank % count;
    a.physical = p.visible ? (*p.visible)[static_cast<size_t>(a.ordinal)] : std::to_string(a.ordinal);
    ranks_on[a.physical].push_back(p.local_rank);
    out.push_back(a);
  }
  for (DeviceAssignment& a : out) a.sharing = static_cast<int>(ranks_on[a.physical].size());
  if (exclusive) {
    for (const auto& [device, ranks] : ranks_on) {
      if (ranks.size() < 2) continue;
      user_error("{} ranks on this node but GPU {} would be shared by local ranks {}: NCCL allows one rank per GPU; "
                 "start at most one rank per GPU, or use dist.backend: mpi",
                 node.size(), device, fmt::format("{}", fmt::join(ranks, ", ")));
    }
  }
  return out;
}

}  // namespace gt
