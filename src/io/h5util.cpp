// HDF5 error reporting for src/io: silences the library's stack dumps and turns its error stack into one sentence.
#include "io/h5util.h"

#include <vector>

namespace gt::h5 {

namespace {

struct ErrorEntry {
  std::string function;
  std::string description;
};

herr_t collect_error_entry(unsigned /*depth*/, const H5E_error2_t* err, void* out) {
  try {
    auto* entries = static_cast<std::vector<ErrorEntry>*>(out);
    entries->push_back({err->func_name ? err->func_name : "", err->desc ? err->desc : ""});
    return 0;
  } catch (...) {
    return -1;  // never let an exception cross the C library
  }
}

}  // namespace

void silence_error_printing() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

std::string take_error_message() {
  std::vector<ErrorEntry> entries;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_error_entry, &entries);
  H5Eclear2(H5E_DEFAULT);
  if (entries.empty()) return "";
  // The outermost entry names the API call; the innermost usually says what really went wrong
  // (a missing file with errno, a bad signature). The ones between rarely help a reader.
  const ErrorEntry& outer = entries.front();
  const ErrorEntry& inner = entries.back();
  std::string message = outer.function + ": " + outer.description;
  if (entries.size() > 1 && inner.description != outer.description) message += ": " + inner.description;
  return message;
}

void check_failed(const char* call, const char* file, int line, const std::string& context) {
  std::string hdf5_message = take_error_message();
  if (hdf5_message.empty()) hdf5_message = "no message from HDF5";
  throw RuntimeError(fmt::format("{}:{}: HDF5 call {} failed {}: {}", file, line, call, context, hdf5_message));
}

}  // namespace gt::h5
