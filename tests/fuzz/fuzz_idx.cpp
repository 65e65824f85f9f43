// Fuzz target: the bytes as an IDX file (Fashion-MNIST images or labels), read plain and, for plain input, gzipped too.
#include <zlib.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "io/idx.h"
#include "fuzz_util.h"

namespace {

void read_both(const std::string& path) {
  try {
    gt::read_idx_images(path);
  } catch (const gt::UserError&) {
  }
  try {
    gt::read_idx_labels(path);
  } catch (const gt::UserError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    gt::fuzz::TempFile file("idx", data, size);
    read_both(file.path());
  }
  // gzread passes plain files through, so the gzip path sees only the fuzzer's (mostly broken) gzip
  // streams; compressing plain input gives it well-formed streams around every mutated header.
  const bool is_gzip = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  if (!is_gzip && size <= (1u << 20)) {
    uLongf packed_size = compressBound(size) + 32;
    std::vector<uint8_t> packed(packed_size);
    z_stream zs{};
    if (deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) __builtin_trap();
    zs.next_in = const_cast<uint8_t*>(data);
    zs.avail_in = static_cast<uInt>(size);
    zs.next_out = packed.data();
    zs.avail_out = static_cast<uInt>(packed.size());
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END) __builtin_trap();
    packed.resize(zs.total_out);
    deflateEnd(&zs);
    gt::fuzz::TempFile file("idx", packed.data(), packed.size(), ".gz");
    read_both(file.path());
  }
  return 0;
}
