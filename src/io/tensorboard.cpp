// TensorBoard event files: hand-written CRC-32C and TFRecord framing around protobuf Event messages.
#include "io/tensorboard.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>

#include "core/error.h"
#include "io/tensorboard_event.pb.h"

namespace gt {

namespace {

// The byte-at-a-time table of the reflected Castagnoli polynomial.
constexpr std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrc32cTable = make_crc32c_table();

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

double unix_seconds_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) crc = kCrc32cTable[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string tfrecord(std::string_view data) {
  std::string out;
  out.reserve(data.size() + 16);
  put_le(out, data.size(), 8);
  put_le(out, masked_crc32c(out.data(), 8), 4);
  out.append(data);
  put_le(out, masked_crc32c(data.data(), data.size()), 4);
  return out;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  const double now = unix_seconds_now();
  const std::string base =
      (std::filesystem::path(dir) / fmt::format("events.out.tfevents.{}.{}", static_cast<int64_t>(now), host_name()))
          .string();
  // O_EXCL: a run resumed within the same second on the same host gets a file of its own, never appends to
  // another writer's records. ".N" sorts after the plain name, so TensorBoard reads the files in order.
  for (int n = 0; !f_; ++n) {
    path_ = n == 0 ? base : fmt::format("{}.{}", base, n);
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno == EEXIST && n < 1000) continue;
    if (fd < 0) runtime_error("cannot create TensorBoard event file {}: {}", path_, std::strerror(errno));
    f_ = ::fdopen(fd, "wb");
    if (!f_) {
      const int e = errno;
      ::close(fd);
      runtime_error("cannot open TensorBoard event file {}: {}", path_, std::strerror(e));
    }
  }
  tensorboard::Event event;
  event.set_wall_time(now);
  event.set_file_version("brain.Event:2");
  append(event.SerializeAsString());
}

TensorBoardWriter::~TensorBoardWriter() {
  if (f_) std::fclose(f_);
}

void TensorBoardWriter::session_start(int64_t step) {
  if (!f_) return;
  tensorboard::Event event;
  event.set_wall_time(unix_seconds_now());
  event.set_step(step);
  event.mutable_session_log()->set_status(tensorboard::SessionLog::START);
  append(event.SerializeAsString());
}

void TensorBoardWriter::scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values) {
  if (!f_) return;
  tensorboard::Event event;
  event.set_wall_time(unix_seconds_now());
  event.set_step(step);
  for (const auto& [tag, value] : values) {
    tensorboard::Summary::Value* v = event.mutable_summary()->add_value();
    v->set_tag(tag);
    v->set_simple_value(static_cast<float>(value));  // NaN and infinities stay as they are: TensorBoard shows them
  }
  append(event.SerializeAsString());
}

void TensorBoardWriter::png_image(int64_t step, const std::string& tag, const std::string& png, int height, int width,
                                  int channels) {
  if (!f_) return;
  GT_CHECK(channels >= 1 && channels <= 4, "image '{}' for {} has {} channels (1 to 4)", tag, path_, channels);
  tensorboard::Event event;
  event.set_wall_time(unix_seconds_now());
  event.set_step(step);
  tensorboard::Summary::Value* v = event.mutable_summary()->add_value();
  v->set_tag(tag);
  tensorboard::Summary::Image* image = v->mutable_image();
  image->set_height(height);
  image->set_width(width);
  image->set_colorspace(channels);  // 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA: the channel count itself
  image->set_encoded_image_string(png);
  append(event.SerializeAsString());
}

void TensorBoardWriter::append(const std::string& event_bytes) {
  const std::string record = tfrecord(event_bytes);
  if (std::fwrite(record.data(), 1, record.size(), f_) != record.size() || std::fflush(f_) != 0)
    runtime_error("cannot append to TensorBoard event file {}: {}", path_, std::strerror(errno));
}

}  // namespace gt
