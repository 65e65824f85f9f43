// Images/s the HDF5 loader delivers per rank (1, 2, 4 simulated ranks as processes), page-cached and cold file.
//
// Usage: bench_loader [--dir DIR] [--res 64,256] [--ranks 1,2,4] [--threads 1,2] [--batch64 1024]
//                     [--batch256 128] [--prefetch 4] [--images64 50000] [--images256 5000] [--json FILE] [--keep]
//                     (--help: what each means)
// Writes one dataset per resolution into DIR (default: the system temp dir), then for each cache
// state (warm: read once beforehand; cold: dropped with posix_fadvise DONTNEED), rank count and
// loader thread count starts that many worker processes (this program with --worker) that each run one epoch of their shard
// through a Loader and check one image per batch against the keyed content. The first prefetch + 2
// batches (the pipeline filling, buffers allocated) are not timed. Prints a table and writes JSON to
// bench/results/ (or --json). Resolutions up to 64 use the 64 settings, larger ones the 256 settings.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <hdf5.h>

#include "config/config.h"
#include "core/version.h"
#include "data/dataset_h5.h"
#include "data/image_source.h"
#include "data/loader.h"

namespace fs = std::filesystem;

namespace {

double monotonic_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Byte j of image i: cheap to make, different per image, checkable by the workers.
uint8_t keyed_byte(int64_t i, size_t j) { return static_cast<uint8_t>((static_cast<uint64_t>(i) * 131u + j * 7u + (j >> 8)) & 0xff); }

struct Options {
  std::string dir = fs::temp_directory_path().string();
  std::vector<int> resolutions = {64, 256};
  std::vector<int> ranks = {1, 2, 4};
  std::vector<int> thread_counts = {1, 2};  // loader threads per rank
  int threads = 1;                          // worker: its loader threads
  int64_t batch64 = 1024, batch256 = 128;  // DCGAN's global batch at 64; ProGAN-like at 256
  int64_t batch = 0;                        // worker: the batch it runs
  int prefetch = 4;
  int64_t images64 = 50000, images256 = 5000;
  std::string json;
  bool keep = false;
  // worker mode
  bool worker = false;
  std::string path;
  int res = 0, rank = 0, world = 1;
};

// The options on the command line: the driver's, and the hidden ones the driver gives the workers it starts.
constexpr int64_t kMaxCount = int64_t{1} << 40;  // bound of image counts and batches, far above any real one
void add_options(CLI::App& app, Options& o) {
  app.add_option("--dir", o.dir, "where the datasets are written (and removed after, unless --keep)")
      ->capture_default_str()
      ->check(CLI::ExistingDirectory);
  app.add_option("--res", o.resolutions,
                 "image sizes, comma-separated (up to 64: the 64 settings, above: the 256 ones)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--ranks", o.ranks, "simulated ranks (worker processes), comma-separated")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--threads", o.thread_counts, "loader threads per rank, comma-separated")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--batch64", o.batch64, "global batch at resolutions up to 64")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, kMaxCount));
  app.add_option("--batch256", o.batch256, "global batch above 64")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, kMaxCount));
  app.add_option("--prefetch", o.prefetch, "batches each loader reads ahead (0: read inside next())")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  app.add_option("--images64", o.images64, "images in the dataset at resolutions up to 64")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, kMaxCount));
  app.add_option("--images256", o.images256, "images in the dataset above 64")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, kMaxCount));
  app.add_option("--json", o.json, "write the results here (default: bench/results/loader_<date>_<host>.json)");
  app.add_flag("--keep", o.keep, "keep the datasets written into --dir");
  // Worker mode: one simulated rank, started by the driver; the empty group hides these from --help.
  const std::string worker;
  app.add_flag("--worker", o.worker, "run one rank's epoch and print its JSON line")->group(worker);
  app.add_option("--path", o.path, "worker: the dataset")->group(worker);
  app.add_option("--resolution", o.res, "worker: its image size")->group(worker)->check(CLI::Range(1, 4096));
  app.add_option("--rank", o.rank, "worker: its rank")->group(worker)->check(CLI::Range(0, 1023));
  app.add_option("--world", o.world, "worker: the rank count")->group(worker)->check(CLI::Range(1, 1024));
  app.add_option("--batch", o.batch, "worker: the global batch")
      ->group(worker)
      ->check(CLI::Range(int64_t{1}, kMaxCount));
  app.add_option("--worker-threads", o.threads, "worker: its loader threads")->group(worker)->check(CLI::Range(1, 256));
}

// A worker needs its dataset, resolution and batch, and a rank inside its world.
void check_worker_options(const Options& o) {
  if (!o.worker) return;
  if (o.path.empty() || o.res == 0 || o.batch == 0)
    throw CLI::ValidationError("--worker", "needs --path, --resolution and --batch");
  if (o.rank >= o.world)
    throw CLI::ValidationError("--rank", fmt::format("{} is not below --world {}", o.rank, o.world));
}

// ---- worker: one simulated rank --------------------------------------------------------------------

int run_worker(const Options& o) {
  gt::DataConfig cfg;
  cfg.source = "hdf5";
  cfg.path = o.path;
  const uint64_t seed = 7;
  auto source = gt::open_image_source(cfg, 3, o.res, seed);
  gt::LoaderOptions lo;
  lo.global_batch = o.batch;
  lo.rank = o.rank;
  lo.world_size = o.world;
  lo.prefetch_batches = o.prefetch;
  lo.threads = o.threads;
  lo.seed = seed;
  gt::BatchPlan plan(source->size(), o.batch, seed);
  lo.end_step = plan.steps_per_epoch();
  const int64_t untimed = o.prefetch + 2;
  if (lo.end_step <= untimed) gt::user_error("{} steps per epoch is too few to time; write more images", lo.end_step);
  gt::Loader loader(*source, lo);
  gt::Tensor batch;
  int64_t images = 0, bad = 0;
  double start = 0, wait_at_start = 0;
  const int plane = o.res * o.res;
  for (int64_t step = 0; step < lo.end_step; ++step) {
    if (step == untimed) {
      start = monotonic_seconds();
      wait_at_start = loader.wait_seconds();
    }
    loader.next(batch);
    if (step >= untimed) images += loader.shard_size();
    // Check one image per batch (a different position each step) against the keyed bytes.
    const int64_t k = step % loader.shard_size();
    const int64_t index = plan.indices(step, loader.shard_first() + k, 1)[0];
    const float* img = batch.f32() + k * 3 * plane;
    for (int j = 0; j < 3 * plane; j += 97) {
      const int c = j / plane, yx = j % plane;
      const float want = keyed_byte(index, static_cast<size_t>(yx) * 3 + c) / 127.5f - 1.f;
      bad += img[j] != want;
    }
  }
  const double end = monotonic_seconds();
  std::printf("%s\n", nlohmann::json{{"rank", o.rank},
                                     {"images", images},
                                     {"start", start},
                                     {"end", end},
                                     {"wait_s", loader.wait_seconds() - wait_at_start},
                                     {"bad_pixels", bad}}
                          .dump()
                          .c_str());
  return bad == 0 ? 0 : 1;
}

// ---- driver ----------------------------------------------------------------------------------------

std::string make_dataset(const Options& o, int res, int64_t count) {
  const std::string path = (fs::path(o.dir) / fmt::format("bench_loader_{}_{}.h5", res, ::getpid())).string();
  const size_t bytes = static_cast<size_t>(res) * res * 3;
  gt::DatasetWriter writer(path, res, res, 3, false);
  const int64_t per_append = std::max<int64_t>(1, (64 << 20) / static_cast<int64_t>(bytes));
  std::vector<uint8_t> block(static_cast<size_t>(per_append) * bytes);
  const double t0 = monotonic_seconds();
  for (int64_t first = 0; first < count; first += per_append) {
    const int64_t n = std::min(per_append, count - first);
    for (int64_t i = 0; i < n; ++i)
      for (size_t j = 0; j < bytes; ++j) block[i * bytes + j] = keyed_byte(first + i, j);
    writer.append_many(block.data(), n);
  }
  writer.finish(fmt::format("bench_loader keyed pattern {}x{}", res, res));
  std::printf("# wrote %s: %lld images, %.0f MB in %.1f s (including generating the pixels)\n", path.c_str(),
              static_cast<long long>(count), fs::file_size(path) / 1e6, monotonic_seconds() - t0);
  return path;
}

// Fraction of the file's pages in the page cache (mincore), to show what "warm" and "cold" really were.
double resident_fraction(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return -1;
  struct stat st;
  fstat(fd, &st);
  void* map = mmap(nullptr, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return -1;
  const long page = sysconf(_SC_PAGESIZE);
  const size_t pages = (st.st_size + page - 1) / page;
  std::vector<unsigned char> in_core(pages);
  double fraction = -1;
  if (mincore(map, st.st_size, in_core.data()) == 0)
    fraction = static_cast<double>(std::count_if(in_core.begin(), in_core.end(), [](unsigned char c) { return c & 1; })) / pages;
  munmap(map, st.st_size);
  return fraction;
}

void warm_cache(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> buf(8 << 20);
  while (f.read(buf.data(), buf.size()) || f.gcount() > 0) {
  }
}

void drop_cache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  fdatasync(fd);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct Row {
  int res, ranks, threads;
  std::string cache;
  double resident_before;
  int64_t batch, steps, images_total;
  double seconds, per_rank_min, per_rank_mean, total_rate, total_mb_s, wait_s_max;
  bool ok;
};

Row run_ranks(const Options& o, const std::string& exe, const std::string& path, int res, int64_t batch, int world,
              int threads, bool cold) {
  if (cold)
    drop_cache(path);
  else
    warm_cache(path);
  Row row{};
  row.res = res;
  row.ranks = world;
  row.threads = threads;
  row.cache = cold ? "cold" : "warm";
  row.resident_before = resident_fraction(path);
  row.batch = batch;
  std::vector<FILE*> pipes;
  for (int r = 0; r < world; ++r) {
    const std::string cmd =
        fmt::format("{} --worker --path {} --resolution {} --rank {} --world {} --batch {} --prefetch {} --worker-threads {}",
                    shell_quote(exe), shell_quote(path), res, r, world, batch, o.prefetch, threads);
    pipes.push_back(popen(cmd.c_str(), "r"));
  }
  double first_start = 1e300, last_end = 0, rate_sum = 0;
  row.per_rank_min = 1e300;
  row.ok = true;
  for (FILE* p : pipes) {
    std::string out;
    char buf[4096];
    while (p && std::fgets(buf, sizeof buf, p)) out += buf;
    const int status = p ? pclose(p) : -1;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(out.substr(out.rfind('{')));
    } catch (...) {
      std::fprintf(stderr, "worker failed (status %d): %s\n", status, out.c_str());
      row.ok = false;
      continue;
    }
    const double start = j["start"], end = j["end"];
    const int64_t images = j["images"];
    const double rate = images / (end - start);
    first_start = std::min(first_start, start);
    last_end = std::max(last_end, end);
    rate_sum += rate;
    row.per_rank_min = std::min(row.per_rank_min, rate);
    row.images_total += images;
    row.wait_s_max = std::max(row.wait_s_max, static_cast<double>(j["wait_s"]));
    row.ok = row.ok && status == 0 && j["bad_pixels"] == 0;
  }
  row.seconds = last_end - first_start;
  row.per_rank_mean = rate_sum / world;
  row.total_rate = row.images_total / row.seconds;
  row.total_mb_s = row.total_rate * res * res * 3 / 1e6;
  row.steps = row.images_total / batch;
  return row;
}

std::string first_line_of(const char* path, const char* prefix) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(prefix, 0) == 0) return line.substr(line.find(':') + 2);
  return "";
}

int run_driver(const Options& o, const std::string& exe) {
  utsname un{};
  uname(&un);
  const std::string cpu = first_line_of("/proc/cpuinfo", "model name");
  const unsigned cores = std::thread::hardware_concurrency();
  double load[3] = {0, 0, 0};
  getloadavg(load, 3);
  unsigned maj, min, rel;
  H5get_libversion(&maj, &min, &rel);
  std::printf("# bench_loader: gantrain %s+%s | host %s | %s, %u cores | HDF5 %u.%u.%u | load avg %.2f\n",
              gt::version(), gt::git_revision(), un.nodename, cpu.c_str(), cores, maj, min, rel, load[0]);
  std::printf("# prefetch %d, one epoch per run (the first %d steps untimed), 3 channels, uint8 -> float NCHW in [-1,1]\n",
              o.prefetch, o.prefetch + 2);
  std::printf("# ranks are processes on this machine, each with its own read-only handle and loader thread\n");

  std::vector<Row> rows;
  std::vector<std::string> files;
  for (int res : o.resolutions) {
    const int64_t count = res <= 64 ? o.images64 : o.images256;
    const int64_t batch = res <= 64 ? o.batch64 : o.batch256;
    const std::string path = make_dataset(o, res, count);
    files.push_back(path);
    for (bool cold : {false, true})
      for (int world : o.ranks)
        for (int threads : o.thread_counts) rows.push_back(run_ranks(o, exe, path, res, batch, world, threads, cold));
  }

  std::printf("\n%6s %6s %6s %7s %9s %6s %6s %8s %14s %14s %13s %9s %8s %6s\n", "res", "cache", "ranks", "threads", "in cache",
              "batch", "timed", "time(s)", "img/s/rank min", "img/s/rank avg", "img/s total", "MB/s", "wait(s)", "check");
  for (const Row& r : rows)
    std::printf("%6d %6s %6d %7d %8.0f%% %6lld %6lld %8.2f %14.0f %14.0f %13.0f %9.0f %8.2f %6s\n", r.res,
                r.cache.c_str(), r.ranks, r.threads, 100 * r.resident_before, static_cast<long long>(r.batch), static_cast<long long>(r.steps),
                r.seconds, r.per_rank_min, r.per_rank_mean, r.total_rate, r.total_mb_s, r.wait_s_max,
                r.ok ? "ok" : "FAIL");

  std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", std::localtime(&now));
  nlohmann::json out = {{"benchmark", "loader"},
                        {"date", date},
                        {"host", un.nodename},
                        {"cpu", cpu},
                        {"cores", cores},
                        {"load_avg_1min", load[0]},
                        {"commit", gt::git_revision()},
                        {"version", gt::version()},
                        {"hdf5", fmt::format("{}.{}.{}", maj, min, rel)},

                        {"prefetch_batches", o.prefetch},
                        {"rows", nlohmann::json::array()}};
  for (const Row& r : rows)
    out["rows"].push_back({{"resolution", r.res},
                           {"cache", r.cache},
                           {"resident_before", r.resident_before},
                           {"ranks", r.ranks},
                           {"loader_threads", r.threads},
                           {"global_batch", r.batch},
                           {"timed_steps", r.steps},
                           {"images", r.images_total},
                           {"seconds", r.seconds},
                           {"images_per_s_per_rank_min", r.per_rank_min},
                           {"images_per_s_per_rank_mean", r.per_rank_mean},
                           {"images_per_s_total", r.total_rate},
                           {"mb_per_s_total", r.total_mb_s},
                           {"max_wait_s", r.wait_s_max},
                           {"check_ok", r.ok}});
  std::string json_path = o.json;
  if (json_path.empty()) {
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%d_%H%M%S", std::localtime(&now));
    // bench/results of the source tree this was built from (CMake passes absolute source paths).
    const fs::path results = fs::path(__FILE__).parent_path().parent_path() / "results";
    fs::create_directories(results);
    json_path = (results / fmt::format("loader_{}_{}.json", stamp, un.nodename)).string();
  }
  std::ofstream(json_path) << out.dump(2) << "\n";
  std::printf("\n# wrote %s\n", json_path.c_str());
  if (!o.keep)
    for (const std::string& f : files) fs::remove(f);
  bool all_ok = true;
  for (const Row& r : rows) all_ok = all_ok && r.ok;
  return all_ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Images/s the HDF5 loader delivers per rank (ranks simulated as processes), page-cached and cold "
               "file; a table and a JSON file."};
  add_options(app, o);
  try {
    app.parse(argc, argv);
    check_worker_options(o);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    if (o.worker) return run_worker(o);
    return run_driver(o, fs::read_symlink("/proc/self/exe").string());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_loader: %s\n", e.what());
    return 1;
  }
}
