// All-reduce bandwidth of gantrain's communicator, printed like nccl-tests' all_reduce_perf and saved as JSON under bench/results/.
//
//   mpirun -np 2 build/bench/bench_allreduce [--min-bytes 8] [--max-bytes 128M] [--factor 4] [--iters 20]
//                                            [--warmup 5] [--type float|double] [--op sum|avg] [--json FILE]
//
// Each size runs out of place (send != recv) and in place, warm-up iterations untimed; the time of a
// size is the slowest rank's mean over the timed iterations. algbw = bytes / time; busbw = algbw * 2(n-1)/n,
// the bandwidth each rank's link needs for a ring all-reduce, comparable across rank counts. After the
// timing, one more all-reduce of a known pattern is checked element by element (#wrong, summed over ranks).
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/version.h"
#include "dist/communicator.h"
#include "dist/launch.h"

#if GANTRAIN_HAVE_MPI
#include <mpi.h>
#endif

namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

struct Options {
  int64_t min_bytes = 8, max_bytes = int64_t{128} << 20;
  int factor = 4;
  int iters = 20, warmup = 5;
  std::string type = "float", op = "sum", json;
  std::string backend = "auto";
};

int64_t parse_bytes(const std::string& s) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  const std::string unit = end ? end : "";
  if (unit == "K" || unit == "k") v *= 1024;
  else if (unit == "M") v *= 1024 * 1024;
  else if (unit == "G") v *= 1024.0 * 1024 * 1024;
  else if (!unit.empty()) gt::user_error("'{}' is not a size (e.g. 8, 64K, 128M)", s);
  return static_cast<int64_t>(v);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) gt::user_error("{} needs a value", a);
      return argv[++i];
    };
    if (a == "--min-bytes") o.min_bytes = parse_bytes(value());
    else if (a == "--max-bytes") o.max_bytes = parse_bytes(value());
    else if (a == "--factor") o.factor = std::atoi(value().c_str());
    else if (a == "--iters") o.iters = std::atoi(value().c_str());
    else if (a == "--warmup") o.warmup = std::atoi(value().c_str());
    else if (a == "--type") o.type = value();
    else if (a == "--op") o.op = value();
    else if (a == "--json") o.json = value();
    else if (a == "--backend") o.backend = value();
    else gt::user_error("unknown option {} (see the header of bench/allreduce/bench_allreduce.cpp)", a);
  }
  if (o.type != "float" && o.type != "double") gt::user_error("--type must be float or double, got {}", o.type);
  if (o.op != "sum" && o.op != "avg") gt::user_error("--op must be sum or avg, got {}", o.op);
  if (o.factor < 2 || o.iters < 1 || o.warmup < 0 || o.min_bytes < 1 || o.max_bytes < o.min_bytes)
    gt::user_error("need --factor >= 2, --iters >= 1, --warmup >= 0 and 1 <= --min-bytes <= --max-bytes");
  return o;
}

struct Result {
  double time_us = 0, algbw = 0, busbw = 0;
  int64_t wrong = 0;
};

// Rank r's element i: (r + 1) * (1 + i % 13). Sums are small integers, exact in float.
template <class T>
void fill_pattern(std::vector<T>& v, int rank) {
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<T>((rank + 1) * (1 + static_cast<int64_t>(i % 13)));
}

template <class T>
int64_t count_wrong(const std::vector<T>& v, int world, gt::ReduceOp op) {
  const double ranks_sum = world * (world + 1) / 2.0;
  int64_t wrong = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    double want = ranks_sum * static_cast<double>(1 + static_cast<int64_t>(i % 13));
    if (op == gt::ReduceOp::avg) want /= world;
    if (std::abs(static_cast<double>(v[i]) - want) > 1e-6 * want) ++wrong;
  }
  return wrong;
}

template <class T>
Result measure(gt::Communicator& comm, int64_t count, gt::ReduceOp op, bool in_place, const Options& o) {
  std::vector<T> send(static_cast<size_t>(count)), recv(static_cast<size_t>(count));
  fill_pattern(send, comm.rank());
  T* out = in_place ? send.data() : recv.data();
  auto once = [&] { comm.all_reduce(send.data(), out, count, op); };
  for (int i = 0; i < o.warmup; ++i) once();
  // Keep each size to about a second: fewer timed iterations for the largest buffers.
  comm.barrier();
  auto t0 = clock_type::now();
  once();
  double probe = std::chrono::duration<double>(clock_type::now() - t0).count();
  comm.all_reduce(&probe, 1, gt::ReduceOp::max);
  const int iters = std::clamp(static_cast<int>(1.0 / std::max(probe, 1e-9)), 3, o.iters);
  comm.barrier();
  t0 = clock_type::now();
  for (int i = 0; i < iters; ++i) once();
  double seconds = std::chrono::duration<double>(clock_type::now() - t0).count() / iters;
  comm.all_reduce(&seconds, 1, gt::ReduceOp::max);
  Result r;
  r.time_us = seconds * 1e6;
  const double bytes = static_cast<double>(count) * sizeof(T);
  r.algbw = bytes / seconds / 1e9;
  const int n = comm.world_size();
  r.busbw = r.algbw * (n > 1 ? 2.0 * (n - 1) / n : 1.0);
  // Check: a fresh pattern through one more all-reduce.
  fill_pattern(send, comm.rank());
  once();
  r.wrong = count_wrong(in_place ? send : recv, n, op);
  comm.all_reduce(&r.wrong, 1, gt::ReduceOp::sum);
  return r;
}

std::string now_stamp(const char* format) {
  std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof(buf), format, std::localtime(&t));
  return buf;
}

std::string mpi_library() {
#if GANTRAIN_HAVE_MPI
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) return "none";
  char text[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int len = 0;
  MPI_Get_library_version(text, &len);
  std::string s(text, static_cast<size_t>(len));
  return s.substr(0, s.find_first_of(",\n"));
#else
  return "none";
#endif
}

int run(const Options& o) {
  auto comm = gt::open_communicator(o.backend, 600);
  const bool lead = comm->rank() == 0;
  const gt::ReduceOp op = o.op == "avg" ? gt::ReduceOp::avg : gt::ReduceOp::sum;
  const size_t elem = o.type == "float" ? 4 : 8;
  utsname un{};
  uname(&un);
  if (lead) {
    std::printf("# bench_allreduce: gantrain %s+%s | %s | host %s | %d ranks (%d on this node), %s communicator | %s\n",
                gt::version(), gt::git_revision(), now_stamp("%Y-%m-%d %H:%M").c_str(), un.nodename,
                comm->world_size(), comm->local_size(), comm->backend().c_str(), mpi_library().c_str());
    std::printf("# warm-up %d, up to %d timed iterations per size (fewer above ~1 s each), time = slowest rank's mean\n",
                o.warmup, o.iters);
    std::printf("#\n#                                               out-of-place                       in-place\n");
    std::printf("# %10s %12s %8s %6s %10s %8s %8s %6s %10s %8s %8s %6s\n", "size", "count", "type", "redop", "time",
                "algbw", "busbw", "#wrong", "time", "algbw", "busbw", "#wrong");
    std::printf("# %10s %12s %8s %6s %10s %8s %8s %6s %10s %8s %8s %6s\n", "(B)", "(elements)", "", "", "(us)",
                "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)", "");
    std::fflush(stdout);
  }
  nlohmann::json rows = nlohmann::json::array();
  double busbw_sum = 0;
  int64_t wrong_total = 0;
  int sizes = 0;
  for (int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= o.factor) {
    const int64_t count = std::max<int64_t>(1, bytes / static_cast<int64_t>(elem));
    Result oop, ip;
    if (o.type == "float") {
      oop = measure<float>(*comm, count, op, false, o);
      ip = measure<float>(*comm, count, op, true, o);
    } else {
      oop = measure<double>(*comm, count, op, false, o);
      ip = measure<double>(*comm, count, op, true, o);
    }
    const int64_t real_bytes = count * static_cast<int64_t>(elem);
    busbw_sum += ip.busbw;
    wrong_total += oop.wrong + ip.wrong;
    ++sizes;
    if (lead) {
      std::printf("  %10lld %12lld %8s %6s %10.1f %8.2f %8.2f %6lld %10.1f %8.2f %8.2f %6lld\n",
                  static_cast<long long>(real_bytes), static_cast<long long>(count), o.type.c_str(), o.op.c_str(),
                  oop.time_us, oop.algbw, oop.busbw, static_cast<long long>(oop.wrong), ip.time_us, ip.algbw, ip.busbw,
                  static_cast<long long>(ip.wrong));
      std::fflush(stdout);
    }
    auto side = [](const Result& r) {
      return nlohmann::json{{"time_us", r.time_us}, {"algbw_gbs", r.algbw}, {"busbw_gbs", r.busbw}, {"wrong", r.wrong}};
    };
    rows.push_back({{"bytes", real_bytes}, {"count", count}, {"out_of_place", side(oop)}, {"in_place", side(ip)}});
  }
  if (!lead) return wrong_total == 0 ? 0 : 1;
  std::printf("# out of bounds values: %lld %s\n# avg bus bandwidth (in place): %.3f GB/s\n",
              static_cast<long long>(wrong_total), wrong_total == 0 ? "OK" : "FAILED", busbw_sum / std::max(sizes, 1));
  nlohmann::json out = {{"benchmark", "allreduce"},
                        {"date", now_stamp("%Y-%m-%dT%H:%M:%S")},
                        {"host", un.nodename},
                        {"commit", gt::git_revision()},
                        {"version", gt::version()},
                        {"world_size", comm->world_size()},
                        {"ranks_per_node", comm->local_size()},
                        {"backend", comm->backend()},
                        {"mpi_library", mpi_library()},
                        {"type", o.type},
                        {"op", o.op},
                        {"warmup", o.warmup},
                        {"max_iters", o.iters},
                        {"wrong_total", wrong_total},
                        {"avg_busbw_gbs_in_place", busbw_sum / std::max(sizes, 1)},
                        {"rows", rows}};
  std::string path = o.json;
  if (path.empty()) {
    // bench/results of the source tree this was built from (CMake passes absolute source paths).
    const fs::path results = fs::path(__FILE__).parent_path().parent_path() / "results";
    fs::create_directories(results);
    path = (results / fmt::format("allreduce_{}_{}_np{}.json", now_stamp("%Y-%m-%d_%H%M%S"), un.nodename,
                                  comm->world_size()))
               .string();
  }
  std::ofstream(path) << out.dump(2) << "\n";
  std::printf("# wrote %s\n", path.c_str());
  return wrong_total == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  gt::MpiRuntime mpi(&argc, &argv);
  try {
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%sbench_allreduce: %s\n", gt::rank_prefix(mpi.rank(), mpi.world_size(), gt::host_name()).c_str(),
                 e.what());
    if (mpi.world_size() > 1) mpi.abort(1);
    return 1;
  }
}
