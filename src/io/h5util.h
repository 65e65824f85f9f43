// Internal to src/io: RAII owners for HDF5 identifiers and H5_CHECK, the one error-check macro for the HDF5 C API.
#pragma once
#include <hdf5.h>

#include <string>
#include <utility>

#include "core/error.h"

namespace gt::h5 {

// Owns one HDF5 identifier and releases it with the matching H5*close function.
template <herr_t (*Close)(hid_t)>
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  ~Handle() { reset(); }
  Handle(Handle&& other) noexcept : id_(std::exchange(other.id_, H5I_INVALID_HID)) {}
  Handle& operator=(Handle&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = std::exchange(other.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now and reports failure (a destructor cannot); used where a failed close loses data (files).
  herr_t close() { return Close(std::exchange(id_, H5I_INVALID_HID)); }
  void reset() {
    if (id_ >= 0) Close(std::exchange(id_, H5I_INVALID_HID));
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

using File = Handle<H5Fclose>;
using Group = Handle<H5Gclose>;
using Dataset = Handle<H5Dclose>;
using Dataspace = Handle<H5Sclose>;
using Datatype = Handle<H5Tclose>;
using Attribute = Handle<H5Aclose>;
using PropList = Handle<H5Pclose>;
using Object = Handle<H5Oclose>;

// Stops HDF5 from printing its error stack to stderr; errors reach the user as exceptions instead.
// Cheap, so every entry point calls it (the setting is per thread in thread-safe HDF5 builds).
void silence_error_printing();

// HDF5's own description of the most recent failure on this thread ("" if none), e.g.
// "H5Fopen: unable to open file: ... errno = 2, error message = 'No such file or directory'".
// Clears the error stack.
std::string take_error_message();

[[noreturn]] void check_failed(const char* call, const char* file, int line, const std::string& context);

// Returns `value` unless it is negative, HDF5's sign of failure for hid_t, herr_t and htri_t alike.
template <class T, class ContextFn>
T checked(T value, const char* call, const char* file, int line, ContextFn&& context) {
  if (value < 0) check_failed(call, file, line, context());
  return value;
}

}  // namespace gt::h5

// H5_CHECK(call, "while doing {}", args...): evaluates an HDF5 call and returns its result; on failure
// throws gt::RuntimeError with file:line, the call, the context sentence and HDF5's own message.
#define H5_CHECK(call, ...) \
  ::gt::h5::checked((call), #call, __FILE__, __LINE__, [&] { return fmt::format(__VA_ARGS__); })
