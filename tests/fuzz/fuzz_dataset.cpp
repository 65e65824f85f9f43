// Fuzz target: the bytes as a dataset .h5 file through DatasetReader::open, then a few image and label reads.
#include <memory>
#include <vector>

#include "core/error.h"
#include "data/dataset_h5.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Files without metadata checksums reach HDF5 1.10's unverified parsers, which crash inside the
  // library on some damaged bytes (found: a SEGV in H5HL_protect reading a local heap, see
  // corpus/dataset/found_hdf5_v0_local_heap_segv.h5). Nothing we can check first stops that, so the
  // target fuzzes the format gantrain ingest writes (superblock v3) and v2; non-HDF5 input still runs.
  const int superblock = gt::fuzz::hdf5_superblock_version(data, size);
  if (superblock == 0 || superblock == 1) return 0;
  if (gt::fuzz::has_inconsistent_global_heap(data, size)) return 0;  // see fuzz_util.h
  gt::fuzz::TempFile file("dataset", data, size, ".h5");
  std::unique_ptr<gt::DatasetReader> opened;
  try {
    opened = std::make_unique<gt::DatasetReader>(gt::DatasetReader::open(file.path()));
  } catch (const gt::UserError&) {
    return 0;  // a bad file is a user error (exit 2)
  }
  // open() validated the metadata and read the first and the last image. A chunk it did not touch
  // may still fail to read later: by design that is a RuntimeError (exit 1, as for an I/O error
  // mid-run), not a finding. Crashes, sanitizer reports and other exceptions still are.
  try {
    const gt::DatasetReader& reader = *opened;
    const gt::DatasetInfo& info = reader.info();
    info.describe();
    const int64_t last = info.count - 1;
    std::vector<uint8_t> pixels(3 * info.sample_bytes());
    reader.read_range(0, 1, pixels.data());
    const std::vector<int64_t> indices = {last, 0, last};  // out of order, repeated
    reader.read_images(indices, pixels.data());
    if (info.has_labels) {
      std::vector<int64_t> labels(indices.size());
      reader.read_labels(indices, labels.data());
    }
    gt::check_dataset_fits_model(info, 3, 32);
  } catch (const gt::UserError&) {
    return 0;  // check_dataset_fits_model: the images do not fit a 3 x 32 x 32 model
  } catch (const gt::RuntimeError&) {
    return 0;
  }
  return 0;
}
