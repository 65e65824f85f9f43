// What the fuzz targets share: the libFuzzer entry point's signature and a temporary file holding the input.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace gt::fuzz {

// The input as a file for readers that take a path (HDF5, zlib): one name per process and target,
// in /dev/shm where it exists (no disk I/O per execution), else $TMPDIR or /tmp; removed after use.
class TempFile {
 public:
  TempFile(const char* target, const uint8_t* data, size_t size, const char* suffix = "") {
    const char* dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : std::getenv("TMPDIR");
    path_ = std::string(dir && *dir ? dir : "/tmp") + "/gantrain-fuzz-" + target + "-" + std::to_string(getpid()) +
            suffix;
    FILE* f = std::fopen(path_.c_str(), "wb");
    if (!f || (size > 0 && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
      std::perror(path_.c_str());
      std::abort();  // the harness itself failed, not the reader: stop loudly
    }
  }
  ~TempFile() { std::remove(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The version of the HDF5 superblock (at 0, 512, 1024, ... as HDF5 looks for it), or -1 without one.
// Versions 0 and 1 (h5py's and HDF5's default) carry no checksums: HDF5 1.10 parses their metadata
// unverified and can crash inside the library on damaged bytes (docs/fuzzing.md, "Known third-party
// findings"). Versions 2 and 3 checksum all metadata, which HDF5 checks before parsing it.
inline int hdf5_superblock_version(const uint8_t* data, size_t size) {
  static constexpr char kSignature[8] = {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'};
  for (size_t at = 0; at + 9 <= size; at = at == 0 ? 512 : at * 2)
    if (std::memcmp(data + at, kSignature, 8) == 0) return data[at + 8];
  return -1;
}

// True when a global heap collection ("GCOL", where HDF5 keeps variable-length strings) in the bytes
// holds an object (the free-space object included) that runs past the collection's end. The global heap has no checksum in any HDF5
// format, and HDF5 1.10's H5HG_read copies such an object without checking its size (found by the
// dataset target: an overlapping, out-of-bounds memcpy inside the library, and a hang in H5HG_read). The readers cannot see
// the heap through HDF5's API, so the targets skip such inputs (docs/fuzzing.md). Pixel bytes that
// happen to spell "GCOL" only make an input skipped, never a finding missed in our own code's paths.
inline bool has_inconsistent_global_heap(const uint8_t* data, size_t size) {
  auto le = [&](size_t at, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | data[at + static_cast<size_t>(i)];
    return v;
  };
  for (size_t at = 0; at + 16 <= size; ++at) {
    if (std::memcmp(data + at, "GCOL", 4) != 0) continue;
    const uint64_t collection = le(at + 8, 8);
    if (collection < 16) return true;
    const size_t end = at + static_cast<size_t>(std::min<uint64_t>(collection, size - at));
    for (size_t p = at + 16; p + 16 <= end;) {
      const uint64_t object = le(p + 8, 8);
      if (le(p, 2) == 0) {  // the free-space object: the rest of the collection, its own header included
        if (object > end - p) return true;
        break;
      }
      if (object > end - (p + 16)) return true;
      p += 16 + static_cast<size_t>((object + 7) & ~uint64_t{7});
    }
  }
  return false;
}

}  // namespace gt::fuzz
