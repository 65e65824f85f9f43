// Fuzz target: the bytes as a dataset .h5 file through verify_dataset_file in a child process (as training and info check it) and here, then reads.
#include <memory>
#include <vector>

#include "core/error.h"
#include "data/dataset_h5.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  gt::fuzz::serve_check("dataset", &gt::verify_dataset_file);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gt::fuzz::TempFile file("dataset", data, size, ".h5");
  // DatasetReader::open_checked's order: HDF5 parses the file in a child first, where a crash or a
  // hang inside the library refuses the file (a finding only when the faulting frame is our code).
  if (!gt::fuzz::check_isolated_then_here("dataset", file.path(), &gt::verify_dataset_file)) return 0;
  std::unique_ptr<gt::DatasetReader> opened;
  try {
    opened = std::make_unique<gt::DatasetReader>(gt::DatasetReader::open(file.path()));
  } catch (const gt::UserError& e) {
    std::fprintf(stderr, "fuzz: verify_dataset_file passed %s but open refused it: %s\n", file.path().c_str(), e.what());
    std::abort();
  }
  // The check read the metadata, every chunk's index entry and the first and the last image. A chunk's
  // data it did not read may still fail to read later: by design that is a RuntimeError (exit 1, as
  // for an I/O error mid-run), not a finding. Crashes, sanitizer reports and other exceptions still are.
  try {
    const gt::DatasetReader& reader = *opened;
    const gt::DatasetInfo& info = reader.info();
    info.describe();
    const int64_t last = info.count - 1;
    std::vector<uint8_t> pixels(3 * info.sample_bytes());
    reader.read_range(0, 1, pixels.data());
    const std::vector<int64_t> indices = {last, 0, last / 2, last};  // out of order, repeated
    std::vector<uint8_t> more(indices.size() * info.sample_bytes());
    reader.read_images(indices, more.data());
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
