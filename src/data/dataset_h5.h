// The gantrain dataset file (HDF5, /images uint8 [N,H,W,C]): an appending writer for ingest and a validating reader.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace gt {

inline constexpr const char* kDatasetFormatName = "gantrain-dataset";
inline constexpr int64_t kDatasetFormatVersion = 1;

// What a dataset file holds, from its shape and root attributes (see docs/formats.md, "Dataset").
struct DatasetInfo {
  std::string path;
  int64_t count = 0;
  int height = 0, width = 0, channels = 0;
  bool has_labels = false;
  int64_t format_version = 0;  // 0 when the file has no format_version attribute (written by another tool)
  std::string source;          // "" when absent
  std::string created_by;      // "" when absent
  int64_t samples_per_chunk = 0;  // 0 when /images is not chunked

  size_t sample_bytes() const { return static_cast<size_t>(height) * width * channels; }
  std::string describe() const;  // "data/celeba64.h5: 202599 images 64x64x3, labels, from '...'"
};

// Writes a dataset through "<path>.tmp": append images (buffered; the file grows as they come), then
// finish() writes the attributes, closes, fsyncs and renames the file onto path. A writer destroyed
// without finish() (an exception in ingest, Ctrl-C unwinding) removes the temporary file, so a
// half-written dataset never appears under the final name.
class DatasetWriter {
 public:
  DatasetWriter(std::string path, int height, int width, int channels, bool with_labels);
  ~DatasetWriter();
  DatasetWriter(const DatasetWriter&) = delete;
  DatasetWriter& operator=(const DatasetWriter&) = delete;

  // One image, H*W*C bytes in HWC order. label is ignored unless the writer has labels.
  void append(const uint8_t* hwc, int64_t label = 0);
  // count images back to back (NHWC); labels[count] or nullptr (then 0 where the writer has labels).
  void append_many(const uint8_t* nhwc, int64_t count, const int64_t* labels = nullptr);
  int64_t count() const;  // images appended so far
  const std::string& path() const;
  // source: a sentence saying where the images came from (stored as the `source` attribute).
  void finish(const std::string& source);
  // Drops everything written so far and removes the temporary file; the writer is then unusable.
  void abort();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A read-only handle on one dataset file. Reads go straight from the file into caller memory, so a
// dataset larger than RAM costs no more resident memory than the batches asked for. Safe to use
// from several threads (the HDF5 library serializes them); each rank opens its own.
class DatasetReader {
 public:
  // Opens and validates path: UserError naming the file and what is wrong (missing, not HDF5,
  // corrupt, no /images, not uint8, not [N,H,W,C], no images, label count mismatch).
  static DatasetReader open(const std::string& path);
  // For files from users: verify_dataset_file in a separate process first (core/file_check.h), so a
  // file that crashes or hangs HDF5 is refused (UserError) instead of ending the run; then open().
  static DatasetReader open_checked(const std::string& path);
  ~DatasetReader();
  DatasetReader(DatasetReader&&) noexcept;
  DatasetReader& operator=(DatasetReader&&) noexcept;

  const DatasetInfo& info() const;
  int64_t size() const { return info().count; }

  // Copies images `indices` (any order, repeats allowed) into out [indices.size(), H, W, C] in the
  // order given. Indices are sorted and runs of consecutive indices become one hyperslab read.
  void read_images(std::span<const int64_t> indices, uint8_t* out) const;
  // Copies images [first, first + count) into out: one read.
  void read_range(int64_t first, int64_t count, uint8_t* out) const;
  // Labels of `indices` (the dataset must have labels).
  void read_labels(std::span<const int64_t> indices, int64_t* out) const;

 private:
  friend std::string verify_dataset_file(const std::string& path);
  struct Impl;
  explicit DatasetReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Everything of a dataset file that HDF5 parses to read it: open()'s checks, every attribute, every
// entry of the chunk index of /images and /labels, the first and last image and label. Returns
// DatasetInfo::describe(); UserError naming the file and the problem otherwise. The "dataset" check
// that executables serve (core/file_check.h).
std::string verify_dataset_file(const std::string& path);

// Checks that a dataset suits a model of `channels` x `resolution` x `resolution`: the images must be
// square at that resolution and have the same channels, except that 1-channel images feed a
// 3-channel model (the gray value repeated). UserError saying what differs otherwise.
void check_dataset_fits_model(const DatasetInfo& info, int channels, int resolution);

}  // namespace gt
