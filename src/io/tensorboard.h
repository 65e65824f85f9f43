// TensorBoard event files: Event protobufs in TFRecord framing (scalars and PNG images), which `tensorboard --logdir` reads.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gt {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord and iSCSI use it.
uint32_t crc32c(const void* data, size_t size);
// TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8, so a CRC of data holding CRCs stays strong.
uint32_t masked_crc32c(const void* data, size_t size);
// One TFRecord: uint64 little-endian length, masked CRC of those 8 bytes, the data, masked CRC of the data.
std::string tfrecord(std::string_view data);

// Appends events to DIR/events.out.tfevents.<unix seconds>.<hostname> (".1", ".2", ... when that name is
// taken), starting with the file_version record. Each call writes whole records and flushes, so a killed
// run keeps every event logged before it. A write that fails is a RuntimeError naming the file.
class TensorBoardWriter {
 public:
  TensorBoardWriter() = default;  // writes nothing (ranks other than 0, or log.tensorboard false)
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // SessionLog START at `step`: the run (re)starts there, and TensorBoard drops the points of steps >= `step`
  // that earlier files of the folder hold (those steps are trained, and logged, again).
  void session_start(int64_t step);
  // One event at `step` holding a scalar (simple_value, float32) per (tag, value).
  void scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values);
  // One event at `step` holding an image: `png` is an encoded PNG of height x width with 1, 2, 3 or 4 channels.
  void png_image(int64_t step, const std::string& tag, const std::string& png, int height, int width, int channels);

  const std::string& path() const { return path_; }

 private:
  void append(const std::string& event_bytes);

  FILE* f_ = nullptr;
  std::string path_;
};

}  // namespace gt
