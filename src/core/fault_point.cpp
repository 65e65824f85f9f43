// GANTRAIN_TEST_KILL: parsed once, then a counter per call of the named point.
#include "core/fault_point.h"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unistd.h>

namespace gt {

namespace {

struct KillPlan {
  bool armed = false;
  std::string point;
  long long nth = 0;
  std::atomic<long long> seen{0};
};

int this_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"})
    if (const char* v = std::getenv(name)) return std::atoi(v);
  return 0;
}

KillPlan& plan() {
  static KillPlan p;
  static std::once_flag once;
  std::call_once(once, [] {
    const char* text = std::getenv("GANTRAIN_TEST_KILL");
    if (!text || !*text) return;
    char point[64] = {};
    long long nth = 0;
    int rank = -1;
    const int n = std::sscanf(text, "%63[a-z_]:%lld:%d", point, &nth, &rank);
    if (n < 2 || nth < 1) {
      std::fprintf(stderr, "gantrain: GANTRAIN_TEST_KILL '%s' is not POINT:N[:RANK] with N >= 1\n", text);
      std::abort();
    }
    if (n == 3 && rank != this_rank()) return;
    p.point = point;
    p.nth = nth;
    p.armed = true;
  });
  return p;
}

}  // namespace

void fault_point(const char* name) {
  KillPlan& p = plan();
  if (!p.armed || p.point != name) return;
  if (p.seen.fetch_add(1) + 1 == p.nth) {
    std::fflush(nullptr);
    std::raise(SIGKILL);
  }
}

}  // namespace gt
