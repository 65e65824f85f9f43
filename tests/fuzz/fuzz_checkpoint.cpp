// Fuzz target: the bytes as a checkpoint .h5, read as load_checkpoint reads it: digest first, or HDF5 in a child process for older formats.
#include <cstring>

#include "core/error.h"
#include "fuzz_util.h"
#include "io/checkpoint.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  gt::fuzz::serve_check("checkpoint", &gt::verify_checkpoint_hdf5);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gt::fuzz::TempFile file("checkpoint", data, size, ".h5");
  static constexpr char kHdf5Signature[8] = {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'};
  const bool older_format = size >= 8 && std::memcmp(data, kHdf5Signature, 8) == 0;
  try {
    // A file without the digest block that starts as HDF5 (formats 1 and 2, damaged or not) is what
    // load_checkpoint parses in a child process first: the same here, then in this process for the coverage.
    if (older_format && !gt::fuzz::check_isolated_then_here("checkpoint", file.path(), &gt::verify_checkpoint_hdf5))
      return 0;
    // The digest block, a file HDF5 parsed safely above, or one refused before HDF5 sees it.
    const gt::Checkpoint ckpt = gt::load_checkpoint(file.path());
    gt::first_nonfinite_tensor(ckpt);
    ckpt.find("G/params", "main.0.weight");
  } catch (const gt::UserError&) {
    return 0;  // a damaged or foreign checkpoint is a user error (exit 2)
  }
  return 0;
}
