// gantrain ingest: lists the source, decodes/crops/resizes on worker threads, writes in order through DatasetWriter.
#include "data/ingest.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "core/error.h"
#include "data/dataset_h5.h"
#include "io/idx.h"

namespace gt {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The one piece of global state: a signal handler can only talk through a global flag.
std::atomic<int> g_ingest_stop_signal{0};
extern "C" void on_ingest_stop_signal(int sig) { g_ingest_stop_signal.store(sig); }

// While alive, SIGINT and SIGTERM make the ingest stop between images and unwind, so the writer's
// destructor removes the temporary file instead of the process dying with it on disk.
class StopOnSignal {
 public:
  StopOnSignal() {
    g_ingest_stop_signal.store(0);
    old_int_ = std::signal(SIGINT, on_ingest_stop_signal);
    old_term_ = std::signal(SIGTERM, on_ingest_stop_signal);
  }
  ~StopOnSignal() {
    std::signal(SIGINT, old_int_);
    std::signal(SIGTERM, old_term_);
  }
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;
  int received() const { return g_ingest_stop_signal.load(); }

 private:
  void (*old_int_)(int) = SIG_DFL;
  void (*old_term_)(int) = SIG_DFL;
};

// ---- options -------------------------------------------------------------------------------------

bool parse_int(std::string_view text, int* value) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, *value);
  return ec == std::errc() && ptr == end && !text.empty();
}

struct FashionMnistSource {
  std::string dir;
};

// "fashion-mnist" or "fashion-mnist:DIR"; a folder that happens to be called fashion-mnist is "./fashion-mnist".
std::optional<FashionMnistSource> fashion_mnist_of(const std::string& from) {
  constexpr std::string_view kName = "fashion-mnist";
  if (from == kName) return FashionMnistSource{kFashionMnistDefaultDir};
  if (from.size() > kName.size() + 1 && from.starts_with(kName) && from[kName.size()] == ':')
    return FashionMnistSource{from.substr(kName.size() + 1)};
  return std::nullopt;
}

void check_out_path(const std::string& out) {
  if (out.empty()) user_error("--out is missing: give the dataset file to write, e.g. data/celeba64.h5");
  std::error_code ec;
  const fs::path path(out);
  if (fs::is_directory(path, ec)) user_error("--out {} is a folder; give a file name such as {}/dataset.h5", out, out);
  const fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  if (!fs::is_directory(dir, ec)) user_error("--out {}: its folder {} does not exist", out, dir.string());
  if (::access(dir.c_str(), W_OK) != 0) user_error("--out {}: its folder {} is not writable", out, dir.string());
}

void check_options(const IngestOptions& o) {
  if (o.size < kMinIngestSize || o.size > kMaxIngestSize)
    user_error("--size {} is out of range: images can be {} to {} pixels square", o.size, kMinIngestSize,
               kMaxIngestSize);
  if (o.channels != 0 && o.channels != 1 && o.channels != 3)
    user_error("--channels {} is not supported: use 1 (gray) or 3 (RGB)", o.channels);
  if (o.threads < 0 || o.threads > kMaxIngestThreads)
    user_error("--threads {} is out of range: use 1 to {}, or 0 for one per core", o.threads, kMaxIngestThreads);
  GT_CHECK(o.max_pixels > 0, "max_pixels {}", o.max_pixels);
}

int resolve_threads(int requested) {
  if (requested > 0) return requested;
  return static_cast<int>(std::clamp<unsigned>(std::thread::hardware_concurrency(), 1, kMaxIngestThreads));
}

std::string crop_text(const CropSpec& crop) {
  if (crop.center) return "center square";
  return fmt::format("box x={} y={} w={} h={}", crop.box.x, crop.box.y, crop.box.w, crop.box.h);
}

// ---- per-image work ------------------------------------------------------------------------------

// What a worker hands back for one input: the resized pixels, or why there are none.
struct IngestItem {
  std::vector<uint8_t> pixels;
  ImageProblem problem = ImageProblem::none;
  std::string detail;
};

IngestItem problem_item(ImageProblem problem, std::string detail) {
  IngestItem item;
  item.problem = problem;
  item.detail = std::move(detail);
  return item;
}

IngestItem crop_and_resize(const PixelImage& image, const CropSpec& crop, int size) {
  const CropBox box = crop.center ? center_square(image.height, image.width) : crop.box;
  if (box.x + box.w > image.width || box.y + box.h > image.height)
    return problem_item(ImageProblem::too_small,
                        fmt::format("the image is {}x{} (width x height); the crop box needs at least {}x{}",
                                    image.width, image.height, box.x + box.w, box.y + box.h));
  IngestItem item;
  item.pixels.resize(static_cast<size_t>(size) * size * image.channels);
  resize_box(image.pixels.data(), image.height, image.width, image.channels, box, size, size, item.pixels.data());
  return item;
}

// Reads a whole file; false with the reason in *why when it cannot be read or is too big to be an image we accept.
bool read_file(const fs::path& path, std::vector<uint8_t>* bytes, IngestItem* why) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) {
    *why = problem_item(ImageProblem::unreadable, ec.message());
    return false;
  }
  if (size > static_cast<uintmax_t>(kMaxImageFileBytes)) {
    *why = problem_item(ImageProblem::too_large,
                        fmt::format("the file has {} bytes, above the limit of {}", size, kMaxImageFileBytes));
    return false;
  }
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) {
    *why = problem_item(ImageProblem::unreadable, std::strerror(errno));
    return false;
  }
  bytes->resize(static_cast<size_t>(size));
  const size_t got = size > 0 ? std::fread(bytes->data(), 1, bytes->size(), file) : 0;
  const bool failed = std::ferror(file) != 0;
  std::fclose(file);
  if (failed) {
    *why = problem_item(ImageProblem::unreadable, "read error");
    return false;
  }
  bytes->resize(got);  // a file that shrank while we read it decodes as truncated
  return true;
}

IngestItem process_image_file(const fs::path& path, const CropSpec& crop, int size, int channels, int64_t max_pixels) {
  std::vector<uint8_t> bytes;
  IngestItem failed;
  if (!read_file(path, &bytes, &failed)) return failed;
  DecodeResult decoded = decode_image(bytes.data(), bytes.size(), channels, max_pixels);
  if (!decoded.ok()) return problem_item(decoded.problem, std::move(decoded.detail));
  return crop_and_resize(decoded.image, crop, size);
}

// ---- ordered parallel map ------------------------------------------------------------------------

// Runs produce(i) for i in [0, count) on `threads` worker threads and calls consume(i, result) on the
// calling thread in index order. A worker may run at most `window` indices ahead of the consumer, so
// at most `window` finished results wait in memory however slow one image or the writer is.
// An exception in produce or consume stops the workers and is rethrown here.
template <class Result, class Produce, class Consume>
void ordered_parallel_map(int64_t count, int threads, int64_t window, Produce&& produce, Consume&& consume) {
  GT_CHECK(threads >= 1 && window >= 1, "ordered_parallel_map with {} threads, window {}", threads, window);
  std::mutex mutex;
  std::condition_variable slot_freed, result_ready;
  std::vector<std::optional<Result>> slots(static_cast<size_t>(window));
  int64_t next_task = 0, next_consumed = 0;
  bool stopping = false;
  std::exception_ptr worker_failure;

  auto work = [&] {
    for (;;) {
      int64_t index;
      {
        std::unique_lock lock(mutex);
        slot_freed.wait(lock, [&] { return stopping || next_task >= count || next_task < next_consumed + window; });
        if (stopping || next_task >= count) return;
        index = next_task++;
      }
      std::optional<Result> result;
      try {
        result.emplace(produce(index));
      } catch (...) {
        std::lock_guard lock(mutex);
        if (!worker_failure) worker_failure = std::current_exception();
        stopping = true;
        slot_freed.notify_all();
        result_ready.notify_all();
        return;
      }
      {
        std::lock_guard lock(mutex);
        slots[static_cast<size_t>(index % window)] = std::move(result);
      }
      result_ready.notify_all();
    }
  };

  std::vector<std::thread> pool;
  struct StopAndJoin {
    std::mutex& mutex;
    bool& stopping;
    std::condition_variable& slot_freed;
    std::vector<std::thread>& pool;
    ~StopAndJoin() {
      {
        std::lock_guard lock(mutex);
        stopping = true;
      }
      slot_freed.notify_all();
      for (auto& t : pool) t.join();
    }
  } stop_and_join{mutex, stopping, slot_freed, pool};
  for (int t = 0; t < threads; ++t) pool.emplace_back(work);

  for (int64_t i = 0; i < count; ++i) {
    Result result;
    {
      std::unique_lock lock(mutex);
      auto& slot = slots[static_cast<size_t>(i % window)];
      result_ready.wait(lock, [&] { return slot.has_value() || worker_failure != nullptr; });
      if (!slot.has_value()) std::rethrow_exception(worker_failure);
      result = std::move(*slot);
      slot.reset();
      ++next_consumed;
    }
    slot_freed.notify_all();
    consume(i, result);
  }
}

// ---- progress ------------------------------------------------------------------------------------

// Progress on stderr: a redrawn bar on a terminal; in a log file, one line per 10% so logs stay short.
class ProgressMeter {
 public:
  ProgressMeter(int64_t total, ProgressStyle style) : total_(total), style_(style), start_(Clock::now()) {
    if (style_ == ProgressStyle::automatic) style_ = ::isatty(STDERR_FILENO) ? ProgressStyle::bar : ProgressStyle::lines;
    if (total_ <= 0) style_ = ProgressStyle::none;
  }

  void update(int64_t done) {
    if (style_ == ProgressStyle::lines) {
      const int64_t decile = done * 10 / total_;
      if (decile > last_decile_ && done < total_) {
        last_decile_ = decile;
        std::fprintf(stderr, "ingest: %3d%% (%lld/%lld), %.0f images/s\n", static_cast<int>(done * 100 / total_),
                     static_cast<long long>(done), static_cast<long long>(total_), rate(done));
      }
    } else if (style_ == ProgressStyle::bar) {
      const auto now = Clock::now();
      if (done == total_ || now - last_draw_ >= std::chrono::milliseconds(100)) {
        last_draw_ = now;
        draw_bar(done);
      }
    }
  }

  ~ProgressMeter() { finish(); }  // an exception must not leave the cursor at the end of the bar
  ProgressMeter(const ProgressMeter&) = delete;
  ProgressMeter& operator=(const ProgressMeter&) = delete;

  void finish() {
    if (style_ == ProgressStyle::bar && !finished_) std::fputc('\n', stderr);
    finished_ = true;
  }

 private:
  double rate(int64_t done) const {
    const double s = seconds_since(start_);
    return s > 0 ? static_cast<double>(done) / s : 0.0;
  }

  void draw_bar(int64_t done) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(done * kWidth / total_);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, '.');
    std::fprintf(stderr, "\r[%s] %3d%% %lld/%lld  %.0f images/s ", bar.c_str(), static_cast<int>(done * 100 / total_),
                 static_cast<long long>(done), static_cast<long long>(total_), rate(done));
  }

  int64_t total_;
  ProgressStyle style_;
  Clock::time_point start_, last_draw_{};
  int64_t last_decile_ = 0;
  bool finished_ = false;
};

// ---- sources -------------------------------------------------------------------------------------

// One input of the ingest: how many items, how to make item i, its label and the name a report gives it.
struct Source {
  int64_t count = 0;
  bool has_labels = false;
  std::string description;  // "folder /data/celeba", "Fashion-MNIST training set /usr/share/..."
  std::string where;        // what to name in "no valid image" errors
  int64_t ignored = 0;
  std::function<IngestItem(int64_t)> produce;
  std::function<int64_t(int64_t)> label;
  std::function<std::string(int64_t)> name;
};

Source folder_source(const std::string& dir, const CropSpec& crop, int size, int channels, int64_t max_pixels) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) user_error("--from {}: no such folder", dir);
  if (!fs::is_directory(dir, ec)) user_error("--from {} is a file, not a folder of images", dir);
  Source s;
  auto files = std::make_shared<std::vector<std::string>>(find_image_files(dir, &s.ignored));
  if (files->empty())
    user_error("folder {} holds no .jpg, .jpeg or .png files (searched recursively; {} other files ignored)", dir,
               s.ignored);
  const fs::path root(dir);
  s.count = static_cast<int64_t>(files->size());
  s.description = fmt::format("folder {}", fs::absolute(root, ec).lexically_normal().string());
  s.where = fmt::format("folder {}", dir);
  s.produce = [=](int64_t i) { return process_image_file(root / (*files)[i], crop, size, channels, max_pixels); };
  s.name = [files](int64_t i) { return (*files)[i]; };
  return s;
}

// The labels file beside the images file: train-labels-idx1-ubyte[.gz] for train-images-idx3-ubyte[.gz].
std::string labels_path_for(const std::string& images_path) {
  const fs::path p(images_path);
  std::string name = p.filename().string();
  const std::string from = "train-images-idx3-ubyte", to = "train-labels-idx1-ubyte";
  GT_CHECK(name.starts_with(from), "unexpected Fashion-MNIST file name {}", name);
  name.replace(0, from.size(), to);
  return (p.parent_path() / name).string();
}

Source fashion_mnist_source(const FashionMnistSource& fm, const CropSpec& crop, int size, int channels) {
  const std::string images_path = fashion_mnist_train_images(fm.dir);
  const std::string labels_path = labels_path_for(images_path);
  std::error_code ec;
  if (!fs::is_regular_file(labels_path, ec))
    user_error("Fashion-MNIST labels {} not found beside the images {}", labels_path, images_path);
  auto images = std::make_shared<IdxImages>(read_idx_images(images_path));
  auto labels = std::make_shared<std::vector<uint8_t>>(read_idx_labels(labels_path));
  if (static_cast<int64_t>(labels->size()) != images->count)
    user_error("Fashion-MNIST labels {} hold {} labels but the images {} hold {} images", labels_path, labels->size(),
               images_path, images->count);
  if (!crop.center && (crop.box.x + crop.box.w > images->width || crop.box.y + crop.box.h > images->height))
    user_error("--crop {},{},{},{} does not fit in the {}x{} images of {}", crop.box.x, crop.box.y, crop.box.w,
               crop.box.h, images->width, images->height, images_path);
  Source s;
  s.count = images->count;
  s.has_labels = true;
  s.description = fmt::format("Fashion-MNIST training set {}", fs::absolute(images_path, ec).lexically_normal().string());
  s.where = fmt::format("Fashion-MNIST file {}", images_path);
  s.produce = [=](int64_t i) {
    const int64_t pixels = int64_t{images->height} * images->width;
    PixelImage image{images->height, images->width, channels, std::vector<uint8_t>(static_cast<size_t>(pixels * channels))};
    convert_channels(images->pixels.data() + i * pixels, 1, pixels, channels, image.pixels.data());
    return crop_and_resize(image, crop, size);
  };
  s.label = [labels](int64_t i) { return int64_t{(*labels)[static_cast<size_t>(i)]}; };
  s.name = [](int64_t i) { return fmt::format("#{}", i); };
  return s;
}

std::string problem_counts(const std::vector<SkippedFile>& skipped) {
  std::map<std::string, int64_t> counts;
  for (const auto& s : skipped) ++counts[problem_name(s.problem)];
  std::string text;
  for (const auto& [name, n] : counts) text += fmt::format("{}{} {}", text.empty() ? "" : ", ", n, name);
  return text;
}

}  // namespace

CropSpec parse_crop(const std::string& text) {
  if (text == "center") return CropSpec{};
  std::vector<std::string_view> parts;
  std::string_view rest(text);
  for (size_t comma; (comma = rest.find(',')) != std::string_view::npos; rest.remove_prefix(comma + 1))
    parts.push_back(rest.substr(0, comma));
  parts.push_back(rest);
  CropSpec crop;
  crop.center = false;
  if (parts.size() != 4 || !parse_int(parts[0], &crop.box.x) || !parse_int(parts[1], &crop.box.y) ||
      !parse_int(parts[2], &crop.box.w) || !parse_int(parts[3], &crop.box.h) || crop.box.x < 0 || crop.box.y < 0 ||
      crop.box.w <= 0 || crop.box.h <= 0)
    user_error("--crop {}: expected 'center' or x,y,w,h in pixels with w, h > 0 (e.g. 25,50,128,128)", text);
  return crop;
}

std::vector<std::string> find_image_files(const std::string& dir, int64_t* ignored) {
  std::vector<std::string> files;
  int64_t others = 0;
  std::error_code ec;
  const fs::path root(dir);
  for (fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec)) {
    std::error_code entry_error;  // a broken symlink is skipped, not a reason to stop listing
    if (!it->is_regular_file(entry_error)) continue;
    std::string ext = it->path().extension().string();
    for (auto& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (ext == ".jpg" || ext == ".jpeg" || ext == ".png") {
      files.push_back(it->path().lexically_relative(root).generic_string());
    } else {
      ++others;
    }
  }
  if (ec) user_error("cannot list folder {}: {}", dir, ec.message());
  std::sort(files.begin(), files.end());
  if (ignored) *ignored = others;
  return files;
}

IngestReport ingest(const IngestOptions& o) {
  const auto start = Clock::now();
  check_options(o);
  const CropSpec crop = parse_crop(o.crop);
  const auto fashion = fashion_mnist_of(o.from);
  if (!fashion && o.from.empty()) user_error("--from is missing: give a folder of images or fashion-mnist[:DIR]");
  check_out_path(o.out);
  const int channels = o.channels != 0 ? o.channels : (fashion ? 1 : 3);
  const Source source = fashion ? fashion_mnist_source(*fashion, crop, o.size, channels)
                                : folder_source(o.from, crop, o.size, channels, o.max_pixels);

  IngestReport report;
  report.out = o.out;
  report.size = o.size;
  report.channels = channels;
  report.labels = source.has_labels;
  report.ignored = source.ignored;
  report.threads = resolve_threads(o.threads);
  const size_t item_bytes = static_cast<size_t>(o.size) * o.size * channels;
  // Up to 64 results per thread may wait for the writer, but never more than ~256 MiB of them.
  const int64_t window = std::max<int64_t>(2 * report.threads,
                                           std::min<int64_t>(64 * report.threads, (int64_t{256} << 20) / item_bytes));

  DatasetWriter writer(o.out, o.size, o.size, channels, source.has_labels);
  const StopOnSignal stop;
  ProgressMeter progress(source.count, o.progress);
  ordered_parallel_map<IngestItem>(source.count, report.threads, window, source.produce, [&](int64_t i, IngestItem& item) {
    if (const int sig = stop.received())
      runtime_error("ingest stopped by signal {} ({}) after {} of {} inputs; nothing was written to {}", sig,
                    strsignal(sig), i, source.count, o.out);
    if (item.problem == ImageProblem::none) {
      writer.append(item.pixels.data(), source.has_labels ? source.label(i) : 0);
      ++report.written;
    } else {
      report.skipped.push_back(SkippedFile{source.name(i), item.problem, std::move(item.detail)});
    }
    progress.update(i + 1);
  });
  progress.finish();
  if (report.written == 0) {
    writer.abort();
    const SkippedFile& first = report.skipped.front();
    user_error("no valid image in {}: all {} files were skipped ({}); the first, {}, is {}: {}", source.where,
               report.skipped.size(), problem_counts(report.skipped), first.path, problem_name(first.problem),
               first.detail);
  }
  report.source = fmt::format("{}: {} images, crop {}, resized to {}x{}, {} channel{}", source.description,
                              report.written, crop_text(crop), o.size, o.size, channels, channels == 1 ? "" : "s");
  writer.finish(report.source);
  report.seconds = seconds_since(start);
  return report;
}

std::string format_report(const IngestReport& r) {
  std::string text = fmt::format("wrote {} images of {}x{}x{}{} to {} in {:.1f} s ({:.0f} images/s, {} thread{})\n",
                                 r.written, r.size, r.size, r.channels, r.labels ? " with labels" : "", r.out,
                                 r.seconds, r.images_per_second(), r.threads, r.threads == 1 ? "" : "s");
  if (!r.skipped.empty()) {
    text += fmt::format("skipped {} files ({}):\n", r.skipped.size(), problem_counts(r.skipped));
    for (const auto& s : r.skipped) text += fmt::format("  {}: {}: {}\n", s.path, problem_name(s.problem), s.detail);
  }
  if (r.ignored > 0) text += fmt::format("ignored {} files without a .jpg, .jpeg or .png extension\n", r.ignored);
  return text;
}

}  // namespace gt
