// IDX reader (MNIST / Fashion-MNIST): zlib's gzread reads gzip and plain files alike; every defect is a UserError naming the file.
#include "io/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace gt {

namespace {

constexpr uint32_t kImagesMagic = 0x00000803;  // unsigned bytes, 3 dimensions
constexpr uint32_t kLabelsMagic = 0x00000801;  // unsigned bytes, 1 dimension
constexpr uint8_t kUnsignedByteType = 0x08;

// A gzip or plain file opened for reading; gzread passes plain files through unchanged.
class CompressedReader {
 public:
  explicit CompressedReader(const std::string& path) : path_(path) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) user_error("IDX file {} does not exist", path);
    if (std::filesystem::is_directory(path, ec)) user_error("IDX path {} is a directory, not a file", path);
    file_ = gzopen(path.c_str(), "rb");
    if (!file_) user_error("cannot open IDX file {}: {}", path, errno ? std::strerror(errno) : "out of memory");
    gzbuffer(file_, 1 << 20);
  }
  ~CompressedReader() { gzclose(file_); }

  // True when the file is not gzip-compressed (known once something was read).
  bool plain() { return gzdirect(file_) == 1; }
  CompressedReader(const CompressedReader&) = delete;
  CompressedReader& operator=(const CompressedReader&) = delete;

  // Reads up to `n` bytes and returns how many it got: fewer only at the end of the data.
  size_t read(void* dst, size_t n) {
    size_t got = 0;
    while (got < n) {
      unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - got, INT_MAX / 2));
      int r = gzread(file_, static_cast<char*>(dst) + got, chunk);
      if (r < 0) user_error("cannot read IDX file {}: {}", path_, error_text());
      if (r == 0) break;
      got += static_cast<size_t>(r);
    }
    return got;
  }

  // Why the last read stopped short: "" at a clean end, else zlib's reason (a cut-off or corrupt gzip stream).
  std::string stop_reason() {
    int code = Z_OK;
    const char* text = gzerror(file_, &code);
    if (code == Z_OK) return "";
    return fmt::format(" (gzip: {})", text ? text : "error");
  }

 private:
  std::string error_text() {
    int code = Z_OK;
    const char* text = gzerror(file_, &code);
    if (code == Z_ERRNO) return std::strerror(errno);
    return text ? text : "unknown zlib error";
  }

  std::string path_;
  gzFile file_ = nullptr;
};

uint32_t big_endian_u32(const uint8_t* b) {
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

const char* kind_of_magic(uint32_t magic) {
  if (magic == kImagesMagic) return " (an idx3-ubyte image file)";
  if (magic == kLabelsMagic) return " (an idx1-ubyte label file)";
  return "";
}

// Reads the magic number and the big-endian dimensions; checks they are what `expected_magic` promises.
std::vector<uint32_t> read_header(CompressedReader& in, const std::string& path, uint32_t expected_magic) {
  uint8_t magic_bytes[4];
  size_t got = in.read(magic_bytes, 4);
  if (got < 4) user_error("IDX file {} is truncated: it has {} bytes, fewer than the 4 of a magic number{}", path, got,
                          in.stop_reason());
  uint32_t magic = big_endian_u32(magic_bytes);
  if (magic != expected_magic) {
    if (magic_bytes[0] == 0 && magic_bytes[1] == 0 && magic_bytes[2] != kUnsignedByteType)
      user_error("IDX file {} stores elements of type 0x{:02x}; only unsigned bytes (0x08) are supported", path,
                 magic_bytes[2]);
    user_error("{} is not the expected IDX file: its magic number is 0x{:08x}{}, expected 0x{:08x}{}", path, magic,
               kind_of_magic(magic), expected_magic, kind_of_magic(expected_magic));
  }
  const int ndims = magic_bytes[3];
  std::vector<uint8_t> dim_bytes(static_cast<size_t>(ndims) * 4);
  got = in.read(dim_bytes.data(), dim_bytes.size());
  if (got < dim_bytes.size())
    user_error("IDX file {} is truncated: it ends inside its header of {} dimensions{}", path, ndims, in.stop_reason());
  std::vector<uint32_t> dims(static_cast<size_t>(ndims));
  for (int i = 0; i < ndims; ++i) {
    dims[i] = big_endian_u32(&dim_bytes[static_cast<size_t>(i) * 4]);
    if (dims[i] == 0) user_error("IDX file {} declares dimension {} of size 0; it holds no data", path, i);
  }
  return dims;
}

// Deflate expands at most 1032:1, so a gzip file cannot hold more than this many times its own size.
constexpr uint64_t kMaxDeflateRatio = 1032;

// Checks the payload size a header declares against the file before any memory is sized from it:
// a plain file must hold exactly that many bytes after its header, a gzip file at most what its
// compressed bytes can unpack to.
void check_declared_size(CompressedReader& in, const std::string& path, uint64_t expected, const std::string& declared,
                         size_t header_bytes) {
  std::error_code ec;
  const uintmax_t file_size = std::filesystem::file_size(path, ec);
  if (ec) return;  // not a regular file (a pipe): the growing buffer below still bounds memory
  if (in.plain()) {
    const uint64_t follow = file_size > header_bytes ? file_size - header_bytes : 0;
    if (expected > follow)
      user_error("IDX file {} is truncated: its header declares {} ({} bytes) but only {} bytes follow", path,
                 declared, expected, follow);
    if (expected < follow)
      user_error("IDX file {} is longer than its header declares ({}, {} bytes): the dimensions do not match the size",
                 path, declared, expected);
  } else if (expected / kMaxDeflateRatio > file_size) {
    user_error("IDX file {} is truncated or corrupt: its header declares {} ({} bytes), more than its {} gzip-compressed "
               "bytes can hold", path, declared, expected, file_size);
  }
}

// Reads exactly `expected` bytes of payload and makes sure nothing follows. The buffer grows as data arrives,
// so a corrupt header that declares terabytes fails as "truncated" instead of exhausting memory.
std::vector<uint8_t> read_payload(CompressedReader& in, const std::string& path, uint64_t expected,
                                  const std::string& declared) {
  constexpr size_t kChunk = size_t{16} << 20;
  std::vector<uint8_t> data;
  while (data.size() < expected) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, expected - data.size()));
    size_t old_size = data.size();
    data.resize(old_size + want);
    size_t got = in.read(data.data() + old_size, want);
    if (got < want)
      user_error("IDX file {} is truncated: its header declares {} ({} bytes) but only {} bytes follow{}", path,
                 declared, expected, old_size + got, in.stop_reason());
  }
  uint8_t extra;
  if (in.read(&extra, 1) != 0)
    user_error("IDX file {} is longer than its header declares ({}, {} bytes): the dimensions do not match the size",
               path, declared, expected);
  return data;
}

}  // namespace

IdxImages read_idx_images(const std::string& path) {
  CompressedReader in(path);
  std::vector<uint32_t> dims = read_header(in, path, kImagesMagic);
  IdxImages images;
  images.count = dims[0];
  images.height = static_cast<int>(std::min<uint32_t>(dims[1], INT_MAX));
  images.width = static_cast<int>(std::min<uint32_t>(dims[2], INT_MAX));
  if (uint64_t{dims[1]} * dims[2] > (uint64_t{1} << 31))
    user_error("IDX file {} declares images of {}x{} pixels, which is not plausible", path, dims[1], dims[2]);
  const uint64_t bytes = uint64_t{dims[0]} * dims[1] * dims[2];  // below 2^63: dims[1] * dims[2] <= 2^31
  const std::string declared = fmt::format("{} images of {}x{}", dims[0], dims[1], dims[2]);
  check_declared_size(in, path, bytes, declared, 16);
  images.pixels = read_payload(in, path, bytes, declared);
  return images;
}

std::vector<uint8_t> read_idx_labels(const std::string& path) {
  CompressedReader in(path);
  std::vector<uint32_t> dims = read_header(in, path, kLabelsMagic);
  const std::string declared = fmt::format("{} labels", dims[0]);
  check_declared_size(in, path, dims[0], declared, 8);
  return read_payload(in, path, dims[0], declared);
}

std::string fashion_mnist_train_images(const std::string& dir) {
  const std::filesystem::path base(dir);
  std::error_code ec;
  for (const char* name : {"train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"}) {
    std::filesystem::path candidate = base / name;
    if (std::filesystem::is_regular_file(candidate, ec)) return candidate.string();
  }
  user_error(
      "Fashion-MNIST training images not found: looked for {} and {}{}. Debian's package dataset-fashion-mnist "
      "provides them in {} (apt install dataset-fashion-mnist), or download them from "
      "https://github.com/zalandoresearch/fashion-mnist into that directory.",
      (base / "train-images-idx3-ubyte.gz").string(), (base / "train-images-idx3-ubyte").string(),
      std::filesystem::is_directory(base, ec) ? "" : fmt::format(" (the directory {} does not exist)", dir),
      kFashionMnistDefaultDir);
}

}  // namespace gt
