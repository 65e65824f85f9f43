// Fuzz target: the bytes as a checkpoint .h5 through parse_checkpoint_hdf5 (the HDF5 reader without the whole-file digest).
#include "core/error.h"
#include "io/checkpoint.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // /meta's text lives in HDF5's unchecksummed global heap, whose damaged objects HDF5 1.10 copies
  // unchecked (fuzz_util.h). load_checkpoint's whole-file digest keeps such files from HDF5.
  if (gt::fuzz::has_inconsistent_global_heap(data, size)) return 0;
  gt::fuzz::TempFile file("checkpoint", data, size, ".h5");
  try {
    const gt::Checkpoint ckpt = gt::parse_checkpoint_hdf5(file.path());
    gt::first_nonfinite_tensor(ckpt);
    ckpt.find("G/params", "main.0.weight");
  } catch (const gt::UserError&) {
    return 0;  // a damaged or foreign checkpoint is a user error (exit 2)
  }
  return 0;
}
