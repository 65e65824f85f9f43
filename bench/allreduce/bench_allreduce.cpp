// All-reduce bandwidth of gantrain's communicator, printed like nccl-tests' all_reduce_perf and saved as JSON under bench/results/.
//
//   mpirun -np 2 build/bench/bench_allreduce [--min-bytes 8] [--max-bytes 128M] [--factor 4] [--iters 20]
//                                            [--warmup 5] [--type float|double] [--op sum|avg] [--json FILE]
//                                            [--backend auto|mpi|local|nccl] [--device-buffers]   (--help: all)
//
// --backend nccl all-reduces device buffers with NCCL (one rank per GPU); --device-buffers makes the MPI
// (or local) communicator take device buffers, staged through pinned host memory (ranks may share a GPU).
// Both print "skipped" and exit 0 where there is no GPU. Times are those of blocking calls, as training
// makes them (each returns with the result in place), not of operations queued back to back as nccl-tests.
// Each size runs out of place (send != recv) and in place, warm-up iterations untimed; the time of a
// size is the slowest rank's mean over the timed iterations. algbw = bytes / time; busbw = algbw * 2(n-1)/n,
// the bandwidth each rank's link needs for a ring all-reduce, comparable across rank counts. After the
// timing, one more all-reduce of a known pattern is checked element by element (#wrong, summed over ranks).
#include <sys/utsname.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/version.h"
#include "parallel/communicator.h"
#include "parallel/launch.h"

#if GANTRAIN_HAVE_MPI
#include <mpi.h>
#endif
#if GANTRAIN_HAVE_CUDA
#include <cuda_runtime.h>

#include "cuda/check.h"
#include "cuda/device.h"
#include "parallel/gpu_placement.h"
#include "cuda/staged_communicator.h"
#endif
#if GANTRAIN_HAVE_NCCL
#include "cuda/nccl_communicator.h"
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
  bool device_buffers = false;  // implied by --backend nccl
};

// CLI11 transform of --min-bytes and --max-bytes: "8", "64K", "128M", "1G" (binary units; the number may
// have a fraction, "0.5K") becomes the byte count as text, which CLI11 then reads into the int64_t.
CLI::Validator byte_size() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        const char* begin = text.c_str();
        char* end = nullptr;
        double v = std::strtod(begin, &end);
        const std::string unit = end;
        if (end == begin) return "'" + text + "' is not a size (e.g. 8, 64K, 128M)";
        if (unit == "K" || unit == "k") v *= 1024;
        else if (unit == "M") v *= 1024.0 * 1024;
        else if (unit == "G") v *= 1024.0 * 1024 * 1024;
        else if (!unit.empty()) return "'" + text + "' is not a size (e.g. 8, 64K, 128M)";
        if (!(v >= 1) || v > 0x1p62) return "'" + text + "' is out of range (1 byte to 4 EiB)";
        text = std::to_string(static_cast<int64_t>(v));
        return "";
      },
      "SIZE", "byte size");
}

// The options on the command line; every rank parses the same argv, so all of them fail alike.
void add_options(CLI::App& app, Options& o) {
  app.add_option("--min-bytes", o.min_bytes, "smallest message, bytes (suffix K, M or G: binary units)")
      ->transform(byte_size())
      ->capture_default_str();
  app.add_option("--max-bytes", o.max_bytes, "largest message, bytes (suffix K, M or G; at least --min-bytes)")
      ->transform(byte_size())
      ->capture_default_str();
  app.add_option("--factor", o.factor, "each size is the previous one times this")
      ->capture_default_str()
      ->check(CLI::Range(2, 1 << 20));
  app.add_option("--iters", o.iters, "timed iterations per size at most (fewer above ~1 s each)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--warmup", o.warmup, "untimed iterations per size first")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000000));
  app.add_option("--type", o.type, "element type")->capture_default_str()->check(CLI::IsMember({"float", "double"}));
  app.add_option("--op", o.op, "reduction")->capture_default_str()->check(CLI::IsMember({"sum", "avg"}));
  app.add_option("--json", o.json,
                 "write the results here (default: bench/results/allreduce_<date>_<host>_np<N>.json)");
  app.add_option("--backend", o.backend,
                 "communicator: auto (MPI under a launcher, else local), mpi, local, or nccl (device buffers, one "
                 "rank per GPU)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "mpi", "local", "nccl"}));
  app.add_flag("--device-buffers", o.device_buffers,
               "all-reduce device buffers through the MPI or local communicator, staged through pinned host memory");
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

#if GANTRAIN_HAVE_CUDA
// One cudaMalloc'd buffer for the device-buffer modes.
class DeviceBytes {
 public:
  explicit DeviceBytes(size_t bytes) { CUDA_CHECK(cudaMalloc(&p_, std::max<size_t>(bytes, 1))); }
  ~DeviceBytes() { cudaFree(p_); }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;
  void* get() const { return p_; }

 private:
  void* p_ = nullptr;
};
#endif

// The send and receive buffers of one size: host vectors, or device memory loaded from and read into them.
template <class T>
class Buffers {
 public:
  Buffers(int64_t count, bool on_device) : send_(static_cast<size_t>(count)), recv_(static_cast<size_t>(count)) {
#if GANTRAIN_HAVE_CUDA
    if (on_device) {
      send_d_ = std::make_unique<DeviceBytes>(bytes());
      recv_d_ = std::make_unique<DeviceBytes>(bytes());
    }
#else
    (void)on_device;
#endif
  }
  T* send() {
#if GANTRAIN_HAVE_CUDA
    if (send_d_) return static_cast<T*>(send_d_->get());
#endif
    return send_.data();
  }
  T* recv() {
#if GANTRAIN_HAVE_CUDA
    if (recv_d_) return static_cast<T*>(recv_d_->get());
#endif
    return recv_.data();
  }
  void load_pattern(int rank) {
    fill_pattern(send_, rank);
#if GANTRAIN_HAVE_CUDA
    if (send_d_) CUDA_CHECK(cudaMemcpy(send_d_->get(), send_.data(), bytes(), cudaMemcpyHostToDevice));
#endif
  }
  const std::vector<T>& result(bool in_place) {
    std::vector<T>& host = in_place ? send_ : recv_;
#if GANTRAIN_HAVE_CUDA
    if (send_d_) CUDA_CHECK(cudaMemcpy(host.data(), in_place ? send() : recv(), bytes(), cudaMemcpyDeviceToHost));
#endif
    return host;
  }

 private:
  size_t bytes() const { return send_.size() * sizeof(T); }
  std::vector<T> send_, recv_;
#if GANTRAIN_HAVE_CUDA
  std::unique_ptr<DeviceBytes> send_d_, recv_d_;
#endif
};

// timed: the communicator measured; host: a communicator over host memory for the bookkeeping (the same
// one unless timed takes device buffers only).
template <class T>
Result measure(gt::Communicator& timed, gt::Communicator& host, int64_t count, gt::ReduceOp op, bool in_place,
               const Options& o) {
  Buffers<T> buf(count, o.device_buffers);
  buf.load_pattern(timed.rank());
  T* out = in_place ? buf.send() : buf.recv();
  auto once = [&] { timed.all_reduce(buf.send(), out, count, op); };
  for (int i = 0; i < o.warmup; ++i) once();
  // Keep each size to about a second: fewer timed iterations for the largest buffers.
  timed.barrier();
  auto t0 = clock_type::now();
  once();
  double probe = std::chrono::duration<double>(clock_type::now() - t0).count();
  host.all_reduce(&probe, 1, gt::ReduceOp::max);
  const int iters = std::clamp(static_cast<int>(1.0 / std::max(probe, 1e-9)), 3, o.iters);
  timed.barrier();
  t0 = clock_type::now();
  for (int i = 0; i < iters; ++i) once();
  double seconds = std::chrono::duration<double>(clock_type::now() - t0).count() / iters;
  host.all_reduce(&seconds, 1, gt::ReduceOp::max);
  Result r;
  r.time_us = seconds * 1e6;
  const double bytes = static_cast<double>(count) * sizeof(T);
  r.algbw = bytes / seconds / 1e9;
  const int n = timed.world_size();
  r.busbw = r.algbw * (n > 1 ? 2.0 * (n - 1) / n : 1.0);
  // Check: a fresh pattern through one more all-reduce.
  buf.load_pattern(timed.rank());
  once();
  r.wrong = count_wrong(buf.result(in_place), n, op);
  host.all_reduce(&r.wrong, 1, gt::ReduceOp::sum);
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

// The communicators of a run: the one measured, and one over host memory for the bookkeeping.
struct Communicators {
  std::unique_ptr<gt::Communicator> host;    // MPI or local
  std::unique_ptr<gt::Communicator> device;  // NCCL, or host's collectives staged from device buffers; null: host buffers
  std::string buffers = "host";              // where the measured buffers live, in words
  std::string nccl;                          // NCCL's describe() line
#if GANTRAIN_HAVE_CUDA
  cudaStream_t stream = nullptr;  // the staged communicator's copies
  ~Communicators() {
    device.reset();
    if (stream) cudaStreamDestroy(stream);
  }
#endif
  gt::Communicator& timed() { return device ? *device : *host; }
};

// "" when device buffers can be measured here; else why not.
std::string why_no_device_buffers() {
#if GANTRAIN_HAVE_CUDA
  const gt::cuda::DeviceReport r = gt::cuda::query_devices();
  return r.count == 0 ? fmt::format("no usable GPU ({})", r.reason) : "";
#else
  return "built without CUDA (GANTRAIN_CUDA=OFF)";
#endif
}

// Opens the device-buffer communicator of o into c (c.host is open; device buffers are usable).
void open_device_communicator(const Options& o, Communicators& c) {
#if GANTRAIN_HAVE_CUDA
  if (o.backend == "nccl") {
    const std::string missing = gt::cuda::nccl_unavailable_reason();
    if (!missing.empty()) gt::user_error("--backend nccl, but {}", missing);
#if GANTRAIN_HAVE_NCCL
    auto nccl = gt::cuda::make_nccl_communicator(gt::borrow_communicator(*c.host), 600);
    c.nccl = nccl->describe();
    c.device = std::move(nccl);
    c.buffers = "device (NCCL)";
#endif
    return;
  }
  // Ranks may share a GPU: the mapping training uses, not exclusive.
  gt::RankDeviceView mine{c.host->host(), {c.host->local_rank(), gt::cuda::query_devices().count,
                                           gt::cuda_visible_devices(gt::process_env())}};
  const auto placed = gt::gather_and_place(*c.host, mine, /*exclusive=*/false);
  CUDA_CHECK(cudaSetDevice(placed[static_cast<size_t>(c.host->rank())].ordinal));
  CUDA_CHECK(cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking));
  c.device = gt::cuda::make_host_staged_communicator(gt::borrow_communicator(*c.host), c.stream);
  c.buffers = placed[static_cast<size_t>(c.host->rank())].sharing > 1 ? "device (staged through pinned host memory; ranks share a GPU)"
                                                                       : "device (staged through pinned host memory)";
#else
  (void)o;
  (void)c;
#endif
}

int run(const Options& o) {
  Communicators comms;
  gt::DistBackend backend = gt::DistBackend::automatic;
  if (!gt::parse_choice(o.backend, &backend)) gt::user_error("--backend {}: expected auto, mpi, local or nccl", o.backend);
  comms.host = gt::open_communicator(backend, 600);
  if (o.device_buffers) {
    const std::string why = why_no_device_buffers();
    int64_t missing = !why.empty();
    comms.host->all_reduce(&missing, 1, gt::ReduceOp::max);
    if (missing) {
      if (comms.host->rank() == 0)
        std::printf("# bench_allreduce: skipped: %s needs a GPU: %s\n",
                    o.backend == "nccl" ? "--backend nccl" : "--device-buffers",
                    why.empty() ? "another rank has none" : why.c_str());
      return 0;
    }
    open_device_communicator(o, comms);
  }
  gt::Communicator* comm = &comms.timed();
  const bool lead = comm->rank() == 0;
  const gt::ReduceOp op = o.op == "avg" ? gt::ReduceOp::avg : gt::ReduceOp::sum;
  const size_t elem = o.type == "float" ? 4 : 8;
  utsname un{};
  uname(&un);
  if (lead) {
    std::printf("# bench_allreduce: gantrain %s+%s | %s | host %s | %d ranks (%d on this node), %s communicator, %s "
                "buffers | %s\n",
                gt::version(), gt::git_revision(), now_stamp("%Y-%m-%d %H:%M").c_str(), un.nodename,
                comm->world_size(), comm->local_size(), comm->backend().c_str(), comms.buffers.c_str(),
                mpi_library().c_str());
    if (!comms.nccl.empty()) std::printf("# %s\n", comms.nccl.c_str());
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
      oop = measure<float>(*comm, *comms.host, count, op, false, o);
      ip = measure<float>(*comm, *comms.host, count, op, true, o);
    } else {
      oop = measure<double>(*comm, *comms.host, count, op, false, o);
      ip = measure<double>(*comm, *comms.host, count, op, true, o);
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
                        {"buffers", comms.buffers},
                        {"nccl", comms.nccl},
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
    const std::string mode = o.backend == "nccl" ? "_nccl" : o.device_buffers ? "_device" : "";
    path = (results / fmt::format("allreduce_{}_{}_np{}{}.json", now_stamp("%Y-%m-%d_%H%M%S"), un.nodename,
                                  comm->world_size(), mode))
               .string();
  }
  std::ofstream(path) << out.dump(2) << "\n";
  std::printf("# wrote %s\n", path.c_str());
  return wrong_total == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  gt::MpiRuntime mpi(&argc, &argv);
  Options o;
  CLI::App app{"All-reduce bandwidth of gantrain's communicator, nccl-tests style: a table on stdout and a JSON "
               "file. Run under mpirun for more than one rank."};
  add_options(app, o);
  try {
    app.parse(argc, argv);
    if (o.max_bytes < o.min_bytes)
      throw CLI::ValidationError("--max-bytes", fmt::format("{} is below --min-bytes {}", o.max_bytes, o.min_bytes));
  } catch (const CLI::ParseError& e) {
    // Every rank parsed the same command line and failed alike: rank 0 speaks for all, none waits.
    const int rc = mpi.rank() == 0 ? app.exit(e) : e.get_exit_code();
    return rc == 0 ? 0 : 2;
  }
  if (o.backend == "nccl") o.device_buffers = true;
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%sbench_allreduce: %s\n", gt::rank_prefix(mpi.rank(), mpi.world_size(), gt::host_name()).c_str(),
                 e.what());
    if (mpi.world_size() > 1) mpi.abort(1);
    return 1;
  }
}
