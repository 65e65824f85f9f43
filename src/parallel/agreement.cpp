// Errors agreed between ranks, config/build identity check, and the pre-flight all-reduce.
#include "parallel/agreement.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "config/config.h"
#include "core/version.h"
#include "parallel/launch.h"

namespace gt {

namespace {

// Strings travel in fixed-size slots so one all-gather moves them.
constexpr int64_t kSlotBytes = 256;

std::vector<uint8_t> to_slot(const std::string& s) {
  std::vector<uint8_t> slot(kSlotBytes, 0);
  std::memcpy(slot.data(), s.data(), std::min<size_t>(s.size(), kSlotBytes - 1));
  return slot;
}

std::vector<std::string> gather_strings(Communicator& comm, const std::string& mine) {
  const std::vector<uint8_t> slot = to_slot(mine);
  std::vector<uint8_t> all(static_cast<size_t>(kSlotBytes * comm.world_size()));
  comm.all_gather(slot.data(), all.data(), kSlotBytes);
  std::vector<std::string> out;
  for (int r = 0; r < comm.world_size(); ++r) out.emplace_back(reinterpret_cast<const char*>(&all[r * kSlotBytes]));
  return out;
}

}  // namespace

std::string broadcast_string(Communicator& comm, std::string text, int root) {
  int64_t length = static_cast<int64_t>(text.size());
  comm.broadcast(&length, 1, root);
  text.resize(static_cast<size_t>(length));
  if (length > 0) comm.broadcast(reinterpret_cast<uint8_t*>(text.data()), length, root);
  return text;
}

bool is_agreed(const std::exception& e) { return dynamic_cast<const AgreedFailure*>(&e) != nullptr; }

void run_agreed(Communicator& comm, const std::function<void()>& body) {
  int64_t code = 0;
  std::string message;
  try {
    body();
  } catch (const AgreedFailure&) {
    throw;  // already agreed by every rank
  } catch (const UserError& e) {
    code = 2;
    message = e.what();
  } catch (const std::exception& e) {
    code = 1;
    message = e.what();
  }
  std::vector<int64_t> codes(static_cast<size_t>(comm.world_size()));
  comm.all_gather(&code, codes.data(), 1);
  const auto failed = std::find_if(codes.begin(), codes.end(), [](int64_t c) { return c != 0; });
  if (failed == codes.end()) return;
  const int root = static_cast<int>(failed - codes.begin());
  if (comm.rank() == root && root != 0) message = rank_prefix(root, comm.world_size(), comm.host()) + message;
  int64_t length = static_cast<int64_t>(message.size());
  comm.broadcast(&length, 1, root);
  message.resize(static_cast<size_t>(length));
  comm.broadcast(reinterpret_cast<uint8_t*>(message.data()), length, root);
  if (*failed == 2) throw AgreedUserError(message);
  throw AgreedRuntimeError(message);
}

std::string build_identity() {
  return fmt::format("gantrain {} {} | compiler {} | mpi {} | cuda {}", version(), git_revision(), __VERSION__,
#if GANTRAIN_HAVE_MPI
                     "on",
#else
                     "off",
#endif
#if GANTRAIN_HAVE_CUDA
                     "on"
#else
                     "off"
#endif
  );
}

std::string describe_identity_mismatch(const std::vector<RankIdentity>& ranks) {
  std::vector<std::string> config_differs, build_differs;
  for (size_t r = 1; r < ranks.size(); ++r) {
    const std::string who = fmt::format("{} ({})", r, ranks[r].host);
    if (ranks[r].config_hash != ranks[0].config_hash) config_differs.push_back(who);
    if (ranks[r].build_hash != ranks[0].build_hash) build_differs.push_back(who);
  }
  std::string out;
  if (!build_differs.empty())
    out = fmt::format("{} {} run{} a different gantrain build than rank 0 ({}); start every rank with the same "
                      "binary",
                      build_differs.size() > 1 ? "ranks" : "rank", fmt::join(build_differs, ", "),
                      build_differs.size() > 1 ? "" : "s", ranks[0].host);
  if (!config_differs.empty()) {
    if (!out.empty()) out += "; and ";
    out += fmt::format("{} {} resolved a different config than rank 0 ({}); give every rank the same config file "
                       "and overrides",
                       config_differs.size() > 1 ? "ranks" : "rank", fmt::join(config_differs, ", "), ranks[0].host);
  }
  return out;
}


std::string first_config_difference(const std::string& a, const std::string& b) {
  const std::vector<ConfigValue> x = flatten_config_yaml(a), y = flatten_config_yaml(b);
  for (size_t i = 0; i < std::max(x.size(), y.size()); ++i) {
    if (i >= x.size()) return fmt::format("{} only in the second", y[i].path);
    if (i >= y.size()) return fmt::format("{} only in the first", x[i].path);
    if (x[i].path != y[i].path) return fmt::format("{} vs {}", x[i].path, y[i].path);
    if (x[i].value != y[i].value) return fmt::format("{}: {} vs {}", x[i].path, x[i].value, y[i].value);
  }
  return a == b ? "" : "the texts differ outside key: value lines";
}

void check_same_config_and_build(Communicator& comm, const std::string& resolved_config) {
  const uint64_t mine[2] = {fnv1a64(resolved_config), fnv1a64(build_identity())};
  std::vector<uint64_t> all(static_cast<size_t>(2 * comm.world_size()));
  static_assert(sizeof(uint64_t) == sizeof(int64_t));
  comm.all_gather(reinterpret_cast<const int64_t*>(mine), reinterpret_cast<int64_t*>(all.data()), 2);
  const std::vector<std::string> hosts = gather_strings(comm, comm.host());
  std::vector<RankIdentity> ranks;
  for (int r = 0; r < comm.world_size(); ++r) ranks.push_back({all[2 * r], all[2 * r + 1], hosts[r]});
  std::string problem = describe_identity_mismatch(ranks);
  if (problem.empty()) return;
  // Name the first key that differs: the first differing rank sends its config to all.
  int root = 0;
  for (int r = 1; r < comm.world_size() && root == 0; ++r)
    if (ranks[r].config_hash != ranks[0].config_hash) root = r;
  if (root != 0) {
    const std::string theirs = broadcast_string(comm, resolved_config, root);
    problem += fmt::format(" (first difference: {} on rank {})", first_config_difference(resolved_config, theirs),
                           root);
  }
  throw AgreedUserError(problem);
}

std::vector<std::string> preflight(Communicator& comm, const std::string& self_description) {
  // Rank r sends (r + 1) * (1 + i % 5): every sum is a small integer, exact in float, and depends
  // on every rank and every position, so a lost, doubled or misplaced contribution shows.
  constexpr int64_t n = 4099;
  const int P = comm.world_size();
  std::vector<float> values(n);
  for (int64_t i = 0; i < n; ++i) values[i] = static_cast<float>((comm.rank() + 1) * (1 + i % 5));
  comm.all_reduce(values.data(), n, ReduceOp::sum);
  const float ranks_sum = static_cast<float>(P * (P + 1) / 2);
  run_agreed(comm, [&] {
    for (int64_t i = 0; i < n; ++i)
      if (values[i] != ranks_sum * static_cast<float>(1 + i % 5))
        runtime_error("pre-flight all-reduce over {} ranks ({}) gave {} at element {} instead of {}", P,
                      comm.backend(), values[i], i, ranks_sum * static_cast<float>(1 + i % 5));
  });
  return gather_strings(comm, self_description);
}

}  // namespace gt
