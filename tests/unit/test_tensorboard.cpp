// Tests for src/io/tensorboard: CRC-32C against RFC 3720's vectors, TFRecord framing, and event files read back record by record.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "core/error.h"
#include "core/tensor.h"
#include "io/image.h"
#include "io/tensorboard.h"
#include "train/run_dir.h"

namespace fs = std::filesystem;

namespace {

using gt::test::ChildOutcome;
using gt::test::runtime_error_in_child;
using gt::test::TempDir;

uint32_t crc_of(const std::string& s) { return gt::crc32c(s.data(), s.size()); }

uint64_t le64(const std::string& s, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(s[at + static_cast<size_t>(i)]);
  return v;
}

uint32_t le32(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(s[at + static_cast<size_t>(i)]);
  return v;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// Splits a TFRecord file into its records' data, checking each length and both masked CRCs on the way.
std::vector<std::string> read_records(const std::string& path) {
  const std::string file = read_file(path);
  std::vector<std::string> records;
  size_t at = 0;
  while (at < file.size()) {
    EXPECT_GE(file.size() - at, 16u) << "a record cut short at byte " << at;
    if (file.size() - at < 16) break;
    const uint64_t length = le64(file, at);
    EXPECT_EQ(le32(file, at + 8), gt::masked_crc32c(file.data() + at, 8)) << "length CRC of the record at " << at;
    EXPECT_LE(at + 12 + length + 4, file.size()) << "the record at " << at << " claims " << length << " bytes";
    if (at + 12 + length + 4 > file.size()) break;
    std::string data = file.substr(at + 12, length);
    EXPECT_EQ(le32(file, at + 12 + length), gt::masked_crc32c(data.data(), data.size()))
        << "data CRC of the record at " << at;
    records.push_back(std::move(data));
    at += 12 + length + 4;
  }
  return records;
}

std::vector<std::string> event_files(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().starts_with("events.out.tfevents.")) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace

// RFC 3720, appendix B.4, and the check value of the CRC catalogue.
TEST(Crc32c, PublishedTestVectors) {
  EXPECT_EQ(crc_of(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc_of(std::string(32, '\xff')), 0x62A8AB43u);
  std::string ascending(32, '\0'), descending(32, '\0');
  for (int i = 0; i < 32; ++i) ascending[static_cast<size_t>(i)] = static_cast<char>(i);
  for (int i = 0; i < 32; ++i) descending[static_cast<size_t>(i)] = static_cast<char>(31 - i);
  EXPECT_EQ(crc_of(ascending), 0x46DD794Eu);
  EXPECT_EQ(crc_of(descending), 0x113FDB5Cu);
  EXPECT_EQ(crc_of("123456789"), 0xE3069283u);
  EXPECT_EQ(crc_of(""), 0u);
}

TEST(Crc32c, MaskIsRotateRight15PlusTheConstant) {
  const std::string data = "123456789";
  const uint32_t crc = 0xE3069283u;
  EXPECT_EQ(gt::masked_crc32c(data.data(), data.size()), ((crc >> 15) | (crc << 17)) + 0xa282ead8u);
}

TEST(TfRecord, FramesLengthCrcDataCrc) {
  const std::string data = "hello, tensorboard";
  const std::string r = gt::tfrecord(data);
  ASSERT_EQ(r.size(), 8 + 4 + data.size() + 4);
  EXPECT_EQ(le64(r, 0), data.size());
  EXPECT_EQ(le32(r, 8), gt::masked_crc32c(r.data(), 8));
  EXPECT_EQ(r.substr(12, data.size()), data);
  EXPECT_EQ(le32(r, 12 + data.size()), gt::masked_crc32c(data.data(), data.size()));
  EXPECT_EQ(gt::tfrecord("").size(), 16u);
}

TEST(TensorBoardWriter, WritesVersionScalarsAndImageRecords) {
  TempDir dir;
  std::string png;
  std::string path;
  {
    gt::TensorBoardWriter w(dir.str());
    path = w.path();
    // Flushed at once: the first record is on disk before anything else is logged.
    ASSERT_EQ(read_records(path).size(), 1u);
    w.scalars(7, {{"loss/d", 1.25}, {"loss/g", -0.5}});
    const std::vector<uint8_t> pixels(3 * 4 * 3, 200);
    png = gt::encode_png(pixels.data(), 3, 4, 3);
    w.png_image(8, "samples", png, 3, 4, 3);
    EXPECT_EQ(read_records(path).size(), 3u);
  }
  const std::string name = fs::path(path).filename().string();
  EXPECT_TRUE(std::regex_match(name, std::regex(R"(events\.out\.tfevents\.\d{10}\.[^/]+)"))) << name;
  EXPECT_EQ(event_files(dir.path()), std::vector<std::string>{path});
  const std::vector<std::string> records = read_records(path);
  ASSERT_EQ(records.size(), 3u);
  EXPECT_TRUE(contains(records[0], "brain.Event:2"));
  EXPECT_TRUE(contains(records[1], "loss/d") && contains(records[1], "loss/g"));
  float v = 1.25f;  // simple_value: field 2, fixed32 (tag byte 0x15), then the float's little-endian bytes
  EXPECT_TRUE(contains(records[1], std::string("\x15", 1) + std::string(reinterpret_cast<const char*>(&v), 4)));
  EXPECT_TRUE(contains(records[2], "samples"));
  EXPECT_TRUE(contains(records[2], png)) << "the PNG bytes are stored as they are";
}

TEST(TensorBoardWriter, ASecondWriterInTheSameSecondGetsAFileOfItsOwn) {
  TempDir dir;
  gt::TensorBoardWriter a(dir.str());
  gt::TensorBoardWriter b(dir.str());
  EXPECT_NE(a.path(), b.path());
  a.scalars(1, {{"x", 1}});
  b.scalars(2, {{"x", 2}});
  EXPECT_EQ(read_records(a.path()).size(), 2u);
  EXPECT_EQ(read_records(b.path()).size(), 2u);
  EXPECT_EQ(event_files(dir.path()).size(), 2u);
}

TEST(TensorBoardWriter, DefaultWriterWritesNothing) {
  gt::TensorBoardWriter w;
  w.scalars(1, {{"x", 1}});
  w.png_image(1, "samples", "not a png", 1, 1, 1);
  EXPECT_TRUE(w.path().empty());
}

TEST(TensorBoardWriter, UnwritableFolderIsRuntimeErrorNamingTheFile) {
  TempDir dir;
  const std::string missing = dir.file("no/such/folder");
  try {
    gt::TensorBoardWriter w(missing);
    FAIL() << "expected an exception";
  } catch (const gt::RuntimeError& e) {
    EXPECT_CONTAINS(e.what(), missing + "/events.out.tfevents.");
  }
}

TEST(TensorBoardWriter, FailedAppendIsRuntimeErrorNamingTheFile) {
  TempDir dir;
  const ChildOutcome out = runtime_error_in_child([&] {
    signal(SIGXFSZ, SIG_IGN);
    gt::TensorBoardWriter w(dir.str());
    const rlimit limit{4096, 4096};
    setrlimit(RLIMIT_FSIZE, &limit);
    w.png_image(1, "samples", std::string(8192, 'x'), 1, 1, 1);
  });
  EXPECT_TRUE(out.runtime_error) << out.message;
  const std::string& message = out.message;
  const std::vector<std::string> files = event_files(dir.path());
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(message, "cannot append to TensorBoard event file " + files[0] + ": File too large");
}

// The grid's PNG goes to TensorBoard as the very bytes of the file in samples/.
TEST(TensorBoardWriter, GridBytesAreTheFileBytes) {
  TempDir dir;
  gt::Tensor images({4, 1, 5, 5});
  for (int64_t i = 0; i < images.numel(); ++i) images.f32()[i] = static_cast<float>(i % 7) / 3.5f - 1.f;
  const gt::PngGrid grid = gt::write_grid_png(dir.file("grid.png"), images, 2);
  EXPECT_EQ(grid.height, 2 * (5 + 2) + 2);
  EXPECT_EQ(grid.width, 2 * (5 + 2) + 2);
  EXPECT_EQ(grid.channels, 1);
  EXPECT_EQ(read_file(dir.file("grid.png")), grid.png);
}

TEST(TensorBoardTag, EveryMetricHasATagInItsSection) {
  EXPECT_EQ(gt::tensorboard_tag("d_loss"), "loss/d");
  EXPECT_EQ(gt::tensorboard_tag("g_loss"), "loss/g");
  EXPECT_EQ(gt::tensorboard_tag("d_real"), "d/real");
  EXPECT_EQ(gt::tensorboard_tag("d_fake"), "d/fake");
  EXPECT_EQ(gt::tensorboard_tag("d_grad_norm"), "grad_norm/d");
  EXPECT_EQ(gt::tensorboard_tag("images_per_sec"), "speed/images_per_s");
  EXPECT_EQ(gt::tensorboard_tag("ms_g_forward"), "time_ms/g_forward");
  EXPECT_EQ(gt::tensorboard_tag("ms_step"), "time_ms/step");
  EXPECT_EQ(gt::tensorboard_tag("swd"), "quality/swd");
  EXPECT_EQ(gt::tensorboard_tag("swd_64"), "quality/swd_64");
  EXPECT_EQ(gt::tensorboard_tag("swd_16"), "quality/swd_16");
  EXPECT_THROW(gt::tensorboard_tag("swd_"), gt::RuntimeError);
  EXPECT_THROW(gt::tensorboard_tag("swd_avg"), gt::RuntimeError);
  EXPECT_THROW(gt::tensorboard_tag("ms_"), gt::RuntimeError);
  EXPECT_THROW(gt::tensorboard_tag("no_such_metric"), gt::RuntimeError);
}

TEST(TensorBoardWriter, SessionStartIsOneRecordAtItsStep) {
  TempDir dir;
  gt::TensorBoardWriter w(dir.str());
  w.session_start(3);
  const std::vector<std::string> records = read_records(w.path());
  ASSERT_EQ(records.size(), 2u);
  // step = 3 (field 2, varint: 0x10 0x03); session_log (field 7, length-delimited: 0x3a) with status START (0x08 0x01).
  EXPECT_TRUE(contains(records[1], std::string("\x10\x03", 2)));
  EXPECT_TRUE(contains(records[1], std::string("\x3a\x02\x08\x01", 4)));
}
