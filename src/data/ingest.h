// gantrain ingest: builds a dataset file (/images uint8 [N,S,S,C]) from a folder of JPEG/PNG images or Fashion-MNIST.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/image_decode.h"
#include "data/resize.h"

namespace gt {

constexpr int kMinIngestSize = 4, kMaxIngestSize = 4096;
constexpr int kMaxIngestThreads = 256;
// Files larger than this are refused without being read (a 100-megapixel PNG is at most ~400 MB).
constexpr int64_t kMaxImageFileBytes = int64_t{1} << 30;

enum class ProgressStyle {
  automatic,  // a bar when stderr is a terminal, else a line every ~10%
  bar,
  lines,
  none,
};

struct IngestOptions {
  std::string from;             // a folder, "fashion-mnist" (the Debian package's folder) or "fashion-mnist:DIR"
  std::string out;              // the dataset file to write (through "<out>.tmp" and a rename)
  int size = 0;                 // images become size x size, kMinIngestSize..kMaxIngestSize
  int channels = 0;             // 1 (luma) or 3 (RGB); 0 = the source's own: 1 for Fashion-MNIST, 3 for a folder
  std::string crop = "center";  // "center" (largest centered square) or "x,y,w,h" in pixels of the upright image
  int threads = 0;              // decoding threads; 0 = one per core
  int64_t max_pixels = kMaxImagePixels;
  ProgressStyle progress = ProgressStyle::automatic;
};

// An explicit crop box, or the centered square of each image.
struct CropSpec {
  bool center = true;
  CropBox box;
};
// Parses --crop: "center" or "x,y,w,h" (x, y >= 0; w, h > 0). UserError naming the text otherwise.
CropSpec parse_crop(const std::string& text);

// .jpg/.jpeg/.png files (any letter case) under dir, recursively, as paths relative to dir sorted
// bytewise, so the dataset's order does not depend on the file system. Other files are counted
// in *ignored. Directory symlinks are not followed (no cycles).
std::vector<std::string> find_image_files(const std::string& dir, int64_t* ignored);

struct SkippedFile {
  std::string path;  // relative to the folder; "#INDEX" for an IDX record
  ImageProblem problem = ImageProblem::none;
  std::string detail;
};

struct IngestReport {
  std::string out;
  std::string source;  // the dataset's `source` attribute
  int size = 0, channels = 0;
  bool labels = false;
  int64_t written = 0;
  int64_t ignored = 0;  // files without an image extension
  std::vector<SkippedFile> skipped;
  int threads = 0;
  double seconds = 0;
  double images_per_second() const { return seconds > 0 ? static_cast<double>(written) / seconds : 0; }
};

// Runs the ingest: files are decoded, cropped and resized on options.threads threads and written
// in sorted order. A bad file is skipped and listed in the report, never fatal. UserError (exit 2,
// nothing written) for bad options, a missing source, an unwritable out, or no valid image at all.
IngestReport ingest(const IngestOptions& options);

// The report the CLI prints: images written, speed, every skipped file with its reason, ignored files.
std::string format_report(const IngestReport& report);

}  // namespace gt
