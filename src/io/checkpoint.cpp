// HDF5 checkpoint writer and reader: /meta attributes plus one group per TensorGroups entry, one dataset per tensor.
#include "io/checkpoint.h"
#include "io/h5_tensors.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string_view>

#include "core/fault_point.h"
#include "core/file_check.h"
#include "core/hash.h"
#include "io/h5util.h"

namespace gt {

namespace {

// Format 2 (docs/formats.md): every stored byte is covered by a checksum HDF5 verifies on read, or by a digest here.
// Format 3: format 2 in a file whose first kDigestBlockBytes (an HDF5 user block, which HDF5 skips) hold the
// file's size and an XXH3-128 digest of everything after them, checked before HDF5 parses anything.
constexpr int64_t kWrittenFormat = 3;
constexpr int64_t kNewestReadableFormat = 3;
constexpr size_t kDigestBlockBytes = 512;  // the smallest HDF5 user block
constexpr std::string_view kDigestMagic = "gantrain checkpoint\n";
constexpr std::string_view kHdf5Signature{"\x89HDF\r\n\x1a\n", 8};
constexpr const char* kMetaGroup = "meta";
// Chunks hold whole tensors up to this size; bigger tensors are split along dim 0 (HDF5 caps a chunk at 4 GiB).
constexpr uint64_t kMaxChunkBytes = uint64_t{1} << 30;

// The variable-length strings of /meta live in HDF5's global heap, which has no checksum: each gets an
// fnv1a64 digest (core/hash.h) beside it.

// Attributes of /meta that have their own CheckpointMeta field; every other integer attribute goes to meta.ints.
const std::set<std::string>& fixed_meta_names() {
  static const std::set<std::string> names = {"format_version", "step",  "epoch",  "images_seen",
                                              "world_size",     "seed",  "resolution", "alpha",
                                              "config",         "code_version", "config_digest",
                                              "code_version_digest"};
  return names;
}

// ---- writing -----------------------------------------------------------------------------------

// Every group we create tracks link creation order, so a reader gets the tensors back in the order they were saved.
h5::PropList ordered_group_plist() {
  h5::PropList plist(H5_CHECK(H5Pcreate(H5P_GROUP_CREATE), "while making a group property list"));
  H5_CHECK(H5Pset_link_creation_order(plist.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED),
           "while asking for ordered groups");
  return plist;
}

h5::Group open_or_create_group(hid_t file, const std::string& path) {
  h5::PropList plist = ordered_group_plist();
  h5::Group group(H5_CHECK(H5Gopen2(file, "/", H5P_DEFAULT), "while opening the root group"));
  size_t start = 0;
  while (start < path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string name = path.substr(start, end - start);
    htri_t exists = H5_CHECK(H5Lexists(group.get(), name.c_str(), H5P_DEFAULT), "while looking for group {}", path);
    hid_t child = exists > 0 ? H5Gopen2(group.get(), name.c_str(), H5P_DEFAULT)
                             : H5Gcreate2(group.get(), name.c_str(), H5P_DEFAULT, plist.get(), H5P_DEFAULT);
    group = h5::Group(H5_CHECK(child, "while creating group {}", path));
    start = end + 1;
  }
  return group;
}

void write_int_attribute(hid_t loc, const std::string& name, int64_t value) {
  h5::Dataspace space(H5_CHECK(H5Screate(H5S_SCALAR), "while making a scalar dataspace"));
  h5::Attribute attr(H5_CHECK(H5Acreate2(loc, name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                              "while creating attribute /meta/{}", name));
  H5_CHECK(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), "while writing attribute /meta/{}", name);
}

void write_double_attribute(hid_t loc, const std::string& name, double value) {
  h5::Dataspace space(H5_CHECK(H5Screate(H5S_SCALAR), "while making a scalar dataspace"));
  h5::Attribute attr(H5_CHECK(H5Acreate2(loc, name.c_str(), H5T_IEEE_F64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                              "while creating attribute /meta/{}", name));
  H5_CHECK(H5Awrite(attr.get(), H5T_NATIVE_DOUBLE, &value), "while writing attribute /meta/{}", name);
}

h5::Datatype variable_utf8_string_type() {
  h5::Datatype type(H5_CHECK(H5Tcopy(H5T_C_S1), "while copying the string type"));
  H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE), "while making a variable-length string type");
  H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8), "while making a UTF-8 string type");
  return type;
}

// Variable-length UTF-8: h5py reads it as str, and the text lives in the global heap, so a long config
// does not run into the 64 KiB limit of attributes stored in the object header.
void write_string_attribute(hid_t loc, const std::string& name, const std::string& value) {
  h5::Datatype type = variable_utf8_string_type();
  h5::Dataspace space(H5_CHECK(H5Screate(H5S_SCALAR), "while making a scalar dataspace"));
  h5::Attribute attr(H5_CHECK(H5Acreate2(loc, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                              "while creating attribute /meta/{}", name));
  const char* text = value.c_str();
  H5_CHECK(H5Awrite(attr.get(), type.get(), &text), "while writing attribute /meta/{}", name);
}

void write_digest_attribute(hid_t loc, const std::string& name, uint64_t value) {
  h5::Dataspace space(H5_CHECK(H5Screate(H5S_SCALAR), "while making a scalar dataspace"));
  h5::Attribute attr(H5_CHECK(H5Acreate2(loc, name.c_str(), H5T_STD_U64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                              "while creating attribute /meta/{}", name));
  H5_CHECK(H5Awrite(attr.get(), H5T_NATIVE_UINT64, &value), "while writing attribute /meta/{}", name);
}

void write_meta(hid_t file, const CheckpointMeta& meta) {
  h5::Group group = open_or_create_group(file, kMetaGroup);
  hid_t g = group.get();
  write_int_attribute(g, "format_version", kWrittenFormat);
  write_int_attribute(g, "step", meta.step);
  write_int_attribute(g, "epoch", meta.epoch);
  write_int_attribute(g, "images_seen", meta.images_seen);
  write_int_attribute(g, "world_size", meta.world_size);
  write_int_attribute(g, "seed", meta.seed);
  write_int_attribute(g, "resolution", meta.resolution);
  write_double_attribute(g, "alpha", meta.alpha);
  write_string_attribute(g, "config", meta.config_yaml);
  write_string_attribute(g, "code_version", meta.code_version);
  write_digest_attribute(g, "config_digest", fnv1a64(meta.config_yaml));
  write_digest_attribute(g, "code_version_digest", fnv1a64(meta.code_version));
  for (const auto& [name, value] : meta.ints) {
    GT_CHECK(!name.empty() && !fixed_meta_names().contains(name),
             "checkpoint meta.ints entry '{}' is empty or collides with a fixed /meta attribute", name);
    write_int_attribute(g, name, value);
  }
}

hid_t file_type_of(const Tensor& t) {
  switch (t.dtype()) {
    case DType::f32: return H5T_IEEE_F32LE;
    case DType::i64: return H5T_STD_I64LE;
    case DType::u8: return H5T_STD_U8LE;
    case DType::bf16: break;
  }
  GT_CHECK(false, "checkpoints store f32, i64 and u8 tensors, not {} (convert to f32 first)", t.str());
  return H5I_INVALID_HID;
}

hid_t memory_type_of(DType dtype) {
  switch (dtype) {
    case DType::f32: return H5T_NATIVE_FLOAT;
    case DType::i64: return H5T_NATIVE_INT64;
    case DType::u8: return H5T_NATIVE_UINT8;
    case DType::bf16: break;
  }
  GT_CHECK(false, "no HDF5 memory type for {}", dtype_name(dtype));
  return H5I_INVALID_HID;
}

h5::Dataspace dataspace_for(const Shape& shape) {
  if (shape.empty()) return h5::Dataspace(H5_CHECK(H5Screate(H5S_SCALAR), "while making a scalar dataspace"));
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  return h5::Dataspace(H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                                "while making a dataspace of shape {}", shape_str(shape)));
}

// How a checkpoint tensor is laid out so that HDF5 itself notices changed bytes on read:
// - non-empty arrays are chunked with the Fletcher32 filter; a chunk is the whole tensor below
//   kMaxChunkBytes, else as many dim-0 rows as fit, so a reader pays one checksum per chunk;
// - a scalar cannot be chunked, so it is stored compact: its bytes sit inside the dataset's object
//   header, which the 1.8 file format (libver low bound v18) checksums and HDF5 verifies whenever the
//   dataset is opened. No digest of our own to keep in step, and h5py reads it as any scalar;
// - an empty tensor has no bytes; its shape is in the (checksummed) object header.
h5::PropList checksummed_layout(const Tensor& t, const std::string& group_path, const std::string& name) {
  h5::PropList plist(H5_CHECK(H5Pcreate(H5P_DATASET_CREATE), "while making a dataset property list"));
  if (t.numel() == 0) return plist;
  if (t.shape().empty()) {
    H5_CHECK(H5Pset_layout(plist.get(), H5D_COMPACT), "while making {}/{} compact", group_path, name);
    return plist;
  }
  std::vector<hsize_t> chunk(t.shape().begin(), t.shape().end());
  const uint64_t row_bytes = t.nbytes() / chunk[0];
  GT_CHECK(row_bytes <= (uint64_t{1} << 32) - 1 - 4, "tensor {}/{} of shape {}: one dim-0 row is over HDF5's 4 GiB chunk limit",
           group_path, name, shape_str(t.shape()));
  chunk[0] = std::min<hsize_t>(chunk[0], std::max<uint64_t>(1, kMaxChunkBytes / row_bytes));
  H5_CHECK(H5Pset_chunk(plist.get(), static_cast<int>(chunk.size()), chunk.data()), "while chunking {}/{}",
           group_path, name);
  H5_CHECK(H5Pset_fletcher32(plist.get()), "while adding a checksum to {}/{}", group_path, name);
  return plist;
}

enum class Layout { plain, checksummed };

void write_tensor(hid_t group, const std::string& group_path, const std::string& name, const Tensor& t,
                  Layout layout) {
  GT_CHECK(!name.empty() && name.find('/') == std::string::npos && name != ".",
           "tensor name '{}' in checkpoint group {} must be non-empty and contain no '/'", name, group_path);
  GT_CHECK(t.defined(), "tensor {}/{} is undefined", group_path, name);
  GT_CHECK(t.device() == Device::cpu, "tensor {}/{} must be copied to the CPU before saving", group_path, name);
  h5::Dataspace space = dataspace_for(t.shape());
  h5::PropList create_plist = layout == Layout::checksummed
                                  ? checksummed_layout(t, group_path, name)
                                  : h5::PropList(H5_CHECK(H5Pcreate(H5P_DATASET_CREATE), "while making a dataset property list"));
  h5::Dataset dataset(H5_CHECK(H5Dcreate2(group, name.c_str(), file_type_of(t), space.get(), H5P_DEFAULT,
                                          create_plist.get(), H5P_DEFAULT),
                               "while creating dataset {}/{}", group_path, name));
  if (t.numel() == 0) return;
  H5_CHECK(H5Dwrite(dataset.get(), memory_type_of(t.dtype()), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()),
           "while writing dataset {}/{}", group_path, name);
}

void write_groups(hid_t file, const TensorGroups& groups) {
  for (const auto& [path, tensors] : groups) {
    GT_CHECK(!path.empty() && path.front() != '/' && path.back() != '/' && path.find("//") == std::string::npos,
             "checkpoint group path '{}' must look like \"G/params\"", path);
    GT_CHECK(path != kMetaGroup && !path.starts_with(std::string(kMetaGroup) + "/"),
             "checkpoint group path '{}' is reserved for metadata", path);
    h5::Group group = open_or_create_group(file, path);
    for (const auto& [name, tensor] : tensors) write_tensor(group.get(), path, name, tensor, Layout::checksummed);
  }
}

// A failed system call of the write path, with its errno kept so save_checkpoint can name the reason.
class OsFailure : public RuntimeError {
 public:
  OsFailure(const std::string& message, int err) : RuntimeError(message), err_(err) {}
  int err() const { return err_; }

 private:
  int err_;
};

// The core driver's memory, handed to us when HDF5 closes the file instead of being freed: the
// image of the file as a normal close leaves it. (H5Fget_file_image of the open file is no substitute:
// HDF5 1.10 clears the superblock's open-for-writing flag in that copy without updating its checksum.)
struct CapturedImage {
  void* memory = nullptr;
  ~CapturedImage() { std::free(memory); }
};

void* image_malloc(size_t size, H5FD_file_image_op_t, void*) { return std::malloc(size); }
void* image_memcpy(void* dest, const void* src, size_t size, H5FD_file_image_op_t, void*) {
  return std::memcpy(dest, src, size);
}
void* image_realloc(void* ptr, size_t size, H5FD_file_image_op_t, void*) { return std::realloc(ptr, size); }
herr_t image_free(void* ptr, H5FD_file_image_op_t op, void* udata) {
  auto* captured = static_cast<CapturedImage*>(udata);
  if (op == H5FD_FILE_IMAGE_OP_FILE_CLOSE && captured->memory == nullptr) {
    captured->memory = ptr;
  } else {
    std::free(ptr);
  }
  return 0;
}
void* image_udata_copy(void* udata) { return udata; }
herr_t image_udata_free(void*) { return 0; }

// The file's size from the version 2 or 3 superblock that follows the user block (what the 1.8 format
// bound gives us): its end-of-file address, which counts the user block (HDF5 truncates a file it
// closes after writing to exactly this size).
uint64_t superblock_eof(const void* memory, size_t capacity) {
  const auto* bytes = static_cast<const unsigned char*>(memory) + kDigestBlockBytes;
  GT_CHECK(capacity >= kDigestBlockBytes + 48 && std::memcmp(bytes, "\x89HDF\r\n\x1a\n", 8) == 0 && bytes[8] >= 2 &&
               bytes[9] == 8,
           "the in-memory checkpoint has no version-2 superblock with 8-byte addresses after its user block");
  auto u64 = [&](int at) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | bytes[at + i];  // little-endian
    return v;
  };
  const uint64_t base = u64(12), eof = u64(28);  // after the signature, version, sizes and flags; then base, extension, eof
  GT_CHECK(base == kDigestBlockBytes && eof > base && eof <= capacity,
           "the in-memory checkpoint's superblock says base {} and end {}, in {} bytes", base, eof, capacity);
  return eof;
}

// The digest block: "gantrain checkpoint\nformat 3\nbytes N\nxxh3_128 HEX\n", NUL-padded to kDigestBlockBytes.
// Text, so `head -c 200 ckpt.h5` shows it; the digest covers bytes [kDigestBlockBytes, N).
std::string digest_of(const char* data, size_t size) {
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits(data, size));
  std::string hex;
  for (unsigned char byte : canonical.digest) hex += fmt::format("{:02x}", byte);
  return hex;
}

void fill_digest_block(char* image, size_t size) {
  const std::string text = fmt::format("{}format {}\nbytes {}\nxxh3_128 {}\n", kDigestMagic, kWrittenFormat, size,
                                       digest_of(image + kDigestBlockBytes, size - kDigestBlockBytes));
  GT_CHECK(text.size() < kDigestBlockBytes, "the digest block text is {} bytes", text.size());
  std::memset(image, 0, kDigestBlockBytes);
  std::memcpy(image, text.data(), text.size());
}

// The whole file, built in memory by HDF5's core driver. HDF5 then does no file I/O of its own: a
// full disk or a file-size limit becomes an errno of our write() (HDF5 1.10 reports such a failure
// only at flush or close, and a failed H5Fclose leaves the library in a state that crashes it at
// exit). The price is a second copy of the checkpoint in memory while it is written.
struct CheckpointImage {
  CapturedImage captured;
  size_t size = 0;
  const char* data() const { return static_cast<const char*>(captured.memory); }
};

void build_checkpoint_image(const std::string& path, const Checkpoint& ckpt, CheckpointImage& image) {
  h5::PropList create_plist(H5_CHECK(H5Pcreate(H5P_FILE_CREATE), "while making a file property list"));
  H5_CHECK(H5Pset_link_creation_order(create_plist.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED),
           "while asking for an ordered root group");
  H5_CHECK(H5Pset_userblock(create_plist.get(), kDigestBlockBytes), "while reserving the digest block");
  h5::PropList access_plist(H5_CHECK(H5Pcreate(H5P_FILE_ACCESS), "while making a file access property list"));
  // The 1.8 format at least: version-2 superblock and object headers, which carry checksums HDF5
  // verifies on every read (HDF5 1.8 and 1.10, h5py included, read it).
  H5_CHECK(H5Pset_libver_bounds(access_plist.get(), H5F_LIBVER_V18, H5F_LIBVER_LATEST),
           "while asking for the checksummed 1.8 file format");
  size_t tensor_bytes = 0;
  for (const auto& [group, tensors] : ckpt.groups)
    for (const auto& [name, t] : tensors) tensor_bytes += t.nbytes();
  // One allocation for most files: the tensors plus room for the metadata (a few KiB per dataset).
  H5_CHECK(H5Pset_fapl_core(access_plist.get(), tensor_bytes + (size_t{4} << 20), /*backing_store=*/0),
           "while asking for an in-memory file");
  H5FD_file_image_callbacks_t callbacks = {image_malloc, image_memcpy,     image_realloc,   image_free,
                                           image_udata_copy, image_udata_free, &image.captured};
  H5_CHECK(H5Pset_file_image_callbacks(access_plist.get(), &callbacks), "while taking over the in-memory file");
  h5::File file(H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, create_plist.get(), access_plist.get()),
                         "while creating checkpoint {} in memory", path));
  write_meta(file.get(), ckpt.meta);
  fault_point("ckpt_meta");
  write_groups(file.get(), ckpt.groups);
  fault_point("ckpt_tensors");
  hsize_t capacity = 0;
  H5_CHECK(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), "while flushing {}", path);
  H5_CHECK(H5Fget_filesize(file.get(), &capacity), "while sizing {}", path);
  H5_CHECK(file.close(), "while closing {}", path);
  GT_CHECK(image.captured.memory != nullptr, "HDF5 closed checkpoint {} without handing back its memory", path);
  image.size = superblock_eof(image.captured.memory, capacity);
  fill_digest_block(static_cast<char*>(image.captured.memory), image.size);
}

// Creates path, then fills it with the image of the checkpoint; any failure is an OsFailure naming path.
void write_hdf5_file(const std::string& path, const Checkpoint& ckpt) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    throw OsFailure(fmt::format("cannot create {}: {}", path, std::strerror(err)), err);
  }
  fault_point("ckpt_created");
  try {
    CheckpointImage image;
    build_checkpoint_image(path, ckpt, image);
    size_t done = 0;
    while (done < image.size) {
      const ssize_t n = ::write(fd, image.data() + done, image.size - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int err = errno;
        throw OsFailure(fmt::format("cannot write {}: {}", path, std::strerror(err)), err);
      }
      done += static_cast<size_t>(n);
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) {  // NFS may report a failed write only here
    const int err = errno;
    throw OsFailure(fmt::format("cannot write {}: {}", path, std::strerror(err)), err);
  }
}

void fsync_path(const std::string& path, int open_flags, const char* what) {
  int fd = ::open(path.c_str(), open_flags);
  if (fd < 0) {
    const int err = errno;
    throw OsFailure(fmt::format("cannot open {} {} to sync it: {}", what, path, std::strerror(err)), err);
  }
  int rc = ::fsync(fd);
  int sync_errno = errno;
  ::close(fd);
  if (rc != 0)
    throw OsFailure(fmt::format("cannot sync {} {} to disk: {}", what, path, std::strerror(sync_errno)), sync_errno);
}

std::string directory_of(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

// The OS reason a write failed, where it is one a user can act on (a full disk or quota, a file-size limit).
int out_of_space_errno(const RuntimeError& e) {
  const auto* os = dynamic_cast<const OsFailure*>(&e);
  const int err = os ? os->err() : 0;
  return err == ENOSPC || err == EFBIG || err == EDQUOT ? err : 0;
}

// ---- reading -----------------------------------------------------------------------------------
// Every problem with the file becomes a UserError of one sentence that starts "checkpoint PATH ...".

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

// "(it has 4096 of its 8192 bytes)" from HDF5's "truncated file: eof = 4096, ..., stored_eof = 8192".
std::string truncation_detail(const std::string& hdf5_message) {
  const size_t eof = hdf5_message.find("eof = ");
  const size_t stored = hdf5_message.find("stored_eof = ");
  if (eof == std::string::npos || stored == std::string::npos) return "it ends before its last byte";
  return fmt::format("it has {} of its {} bytes", std::strtoull(hdf5_message.c_str() + eof + 6, nullptr, 10),
                     std::strtoull(hdf5_message.c_str() + stored + 13, nullptr, 10));
}

// A failed HDF5 call while reading `what` (an object such as /G/params/main.0.weight) of checkpoint `file`.
[[noreturn]] void unreadable(const std::string& file, const std::string& what) {
  const std::string hdf5 = h5::take_error_message();
  if (contains(hdf5, "truncated file")) user_error("checkpoint {} is truncated ({})", file, truncation_detail(hdf5));
  // Fletcher32 on the data ("data error detected by Fletcher32 checksum"); metadata ("incorrect metadata checksum").
  if (contains(hdf5, "Fletcher32") || contains(hdf5, "checksum"))
    user_error("checkpoint {} is corrupt: checksum of {} does not match", file, what);
  user_error("checkpoint {} is corrupt or unreadable: reading {} failed ({})", file, what,
             hdf5.empty() ? "no message from HDF5" : hdf5);
}

// H5_CHECK for the read path: HDF5's sign of failure (negative) becomes unreadable(file, what).
template <class T>
T rd(T value, const std::string& file, const std::string& what) {
  if (value < 0) unreadable(file, what);
  return value;
}

struct LinkNames {
  std::vector<std::string> names;
};

herr_t collect_link_name(hid_t, const char* name, const H5L_info_t*, void* out) {
  try {
    static_cast<LinkNames*>(out)->names.emplace_back(name);
    return 0;
  } catch (...) {
    return -1;  // never let an exception cross the C library
  }
}

herr_t collect_attribute_name(hid_t, const char* name, const H5A_info_t*, void* out) {
  try {
    static_cast<LinkNames*>(out)->names.emplace_back(name);
    return 0;
  } catch (...) {
    return -1;
  }
}

std::string slash_path(const std::string& path) { return path.empty() || path.front() == '/' ? path : "/" + path; }

// Children in creation order where the group tracks it (ours do), else by name (files from other writers).
std::vector<std::string> child_names(hid_t group, const std::string& file_path, const std::string& group_path) {
  const std::string what = slash_path(group_path);
  h5::PropList plist(rd(H5Gget_create_plist(group), file_path, what));
  unsigned order_flags = 0;
  rd(H5Pget_link_creation_order(plist.get(), &order_flags), file_path, what);
  H5_index_t index = (order_flags & H5P_CRT_ORDER_INDEXED) ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME;
  LinkNames out;
  hsize_t position = 0;
  rd(H5Literate(group, index, H5_ITER_INC, &position, collect_link_name, &out), file_path, what);
  return out.names;
}

DType dtype_for_dataset(hid_t dataset, const std::string& file_path, const std::string& dataset_path) {
  h5::Datatype type(rd(H5Dget_type(dataset), file_path, dataset_path));
  H5T_class_t type_class = H5Tget_class(type.get());
  if (type_class == H5T_FLOAT) return DType::f32;
  if (type_class == H5T_INTEGER) {
    bool is_u8 = H5Tget_size(type.get()) == 1 && H5Tget_sign(type.get()) == H5T_SGN_NONE;
    return is_u8 ? DType::u8 : DType::i64;
  }
  user_error("checkpoint {} holds dataset {} of a type that is neither float nor integer", file_path, dataset_path);
}

// The filters of a dataset, by id (H5Z_FILTER_FLETCHER32, H5Z_FILTER_DEFLATE, ...).
std::vector<H5Z_filter_t> filters_of(hid_t create_plist, const std::string& file_path, const std::string& what) {
  const int n = rd(H5Pget_nfilters(create_plist), file_path, what);
  std::vector<H5Z_filter_t> ids;
  for (int i = 0; i < n; ++i) {
    unsigned flags = 0, config = 0;
    size_t n_values = 0;
    char name[64];
    ids.push_back(rd(H5Pget_filter2(create_plist, static_cast<unsigned>(i), &flags, &n_values, nullptr,
                                    sizeof name, name, &config),
                     file_path, what));
  }
  return ids;
}

// Checks, before reading, that the stored bytes can be what the shape says and, in format 2, that
// HDF5 will verify them: a chunk never written reads back as zeros without complaint, so a dataset
// with fewer bytes stored than its shape needs is refused rather than read.
void check_storage(hid_t dataset, const Shape& shape, uint64_t nbytes, int64_t format, const std::string& file_path,
                   const std::string& dataset_path) {
  h5::PropList plist(rd(H5Dget_create_plist(dataset), file_path, dataset_path));
  const H5D_layout_t layout = H5Pget_layout(plist.get());
  const std::vector<H5Z_filter_t> filters = filters_of(plist.get(), file_path, dataset_path);
  const bool fletcher32 = std::find(filters.begin(), filters.end(), H5Z_FILTER_FLETCHER32) != filters.end();
  if (format >= 2) {
    if (shape.empty() && layout != H5D_COMPACT)
      user_error("checkpoint {} is not a valid format-{} checkpoint: scalar {} is not stored compact, where a "
                 "checksum covers it", file_path, format, dataset_path);
    if (!shape.empty() && (layout != H5D_CHUNKED || !fletcher32))
      user_error("checkpoint {} is not a valid format-{} checkpoint: dataset {} has no Fletcher32 checksum (was it "
                 "rewritten by another tool?)", file_path, format, dataset_path);
  }
  const bool compressed = filters.size() > (fletcher32 ? 1u : 0u);
  if (compressed) return;  // compressed data may legitimately take fewer bytes than its shape
  const hsize_t stored = H5Dget_storage_size(dataset);
  if (stored < nbytes)
    user_error("checkpoint {} is truncated or incomplete: dataset {} has {} of its {} bytes stored", file_path,
               dataset_path, stored, nbytes);
}

// Deflate expands at most 1032:1; no filter HDF5 ships (or h5py writes) unpacks more.
constexpr uint64_t kMaxDeflateRatio = 1032;

std::string dims_text(const std::vector<hsize_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += fmt::format("{}{}", i ? ", " : "", dims[i]);
  return s + "]";
}

uint64_t file_size_of(hid_t object, const std::string& file_path) {
  const hid_t file = rd(H5Iget_file_id(object), file_path, "the file's size");
  hsize_t size = 0;
  const herr_t status = H5Fget_filesize(file, &size);
  H5Fclose(file);
  rd(status, file_path, "the file's size");
  return size;
}

// True when a filter other than the Fletcher32 checksum (deflate, shuffle, ...) stands between the file and the data.
bool is_compressed(hid_t dataset, const std::string& file_path, const std::string& dataset_path) {
  h5::PropList plist(rd(H5Dget_create_plist(dataset), file_path, dataset_path));
  for (H5Z_filter_t id : filters_of(plist.get(), file_path, dataset_path))
    if (id != H5Z_FILTER_FLETCHER32) return true;
  return false;
}

Tensor read_tensor(hid_t dataset, int64_t format, const std::string& file_path, const std::string& dataset_path) {
  DType dtype = dtype_for_dataset(dataset, file_path, dataset_path);
  h5::Dataspace space(rd(H5Dget_space(dataset), file_path, dataset_path));
  H5S_class_t space_class = H5Sget_simple_extent_type(space.get());
  if (space_class != H5S_SCALAR && space_class != H5S_SIMPLE)
    user_error("checkpoint {} holds dataset {} with no shape (an empty dataspace)", file_path, dataset_path);
  int ndims = rd(H5Sget_simple_extent_ndims(space.get()), file_path, dataset_path);
  std::vector<hsize_t> dims(static_cast<size_t>(ndims));
  rd(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), file_path, dataset_path);
  // The shape sizes the tensor's memory, so it is checked first, in arithmetic that cannot overflow:
  // stored bytes lie inside the file, and compressed ones unpack to at most kMaxDeflateRatio times it.
  uint64_t numel = 1;
  for (hsize_t d : dims) {
    if (d > uint64_t(INT64_MAX))
      user_error("checkpoint {} is corrupt: dataset {} has shape {}, a dimension above 2^63", file_path, dataset_path,
                 dims_text(dims));
    if (__builtin_mul_overflow(numel, d, &numel)) numel = UINT64_MAX;
  }
  if (numel == 0) return Tensor(Shape(dims.begin(), dims.end()), dtype);
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, dtype_size(dtype), &nbytes)) nbytes = UINT64_MAX;
  const uint64_t file_size = file_size_of(dataset, file_path);
  const bool compressed = is_compressed(dataset, file_path, dataset_path);
  const uint64_t limit = compressed ? file_size * kMaxDeflateRatio : file_size;
  if (nbytes > limit)
    user_error("checkpoint {} is corrupt: dataset {} has shape {} ({} bytes), more than the file's {} bytes{} can "
               "hold", file_path, dataset_path, dims_text(dims), nbytes == UINT64_MAX ? "over 2^64" : std::to_string(nbytes),
               file_size, compressed ? " of compressed data" : "");
  const Shape shape(dims.begin(), dims.end());  // every dim is below 2^63 now
  check_storage(dataset, shape, nbytes, format, file_path, dataset_path);
  Tensor tensor(shape, dtype);
  rd(H5Dread(dataset, memory_type_of(dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, tensor.raw()), file_path, dataset_path);
  return tensor;
}

// Walks the tree below `group`; datasets directly inside a group become that group's TensorGroups entry.
void read_group_tree(hid_t group, const std::string& group_path, int64_t format, const std::string& file_path,
                     TensorGroups& out) {
  std::vector<std::string> names = child_names(group, file_path, group_path.empty() ? "/" : group_path);
  // A leaf group was saved as an entry with no tensors; keep it so the round trip is exact.
  if (names.empty() && !group_path.empty()) out[group_path];
  for (const std::string& name : names) {
    if (group_path.empty() && name == kMetaGroup) continue;
    std::string child_path = group_path.empty() ? name : group_path + "/" + name;
    h5::Object object(rd(H5Oopen(group, name.c_str(), H5P_DEFAULT), file_path, "/" + child_path));
    H5I_type_t kind = H5Iget_type(object.get());
    if (kind == H5I_GROUP) {
      read_group_tree(object.get(), child_path, format, file_path, out);
    } else if (kind == H5I_DATASET) {
      GT_CHECK(!group_path.empty(), "unreachable: root datasets are rejected below");
      out[group_path].emplace_back(name, read_tensor(object.get(), format, file_path, "/" + child_path));
    }
    // Named datatypes are not part of the format; skip them rather than refuse the file.
  }
}

h5::Attribute open_meta_attribute(hid_t meta, const std::string& name, const std::string& file_path) {
  const std::string what = "/meta/" + name;
  htri_t exists = rd(H5Aexists(meta, name.c_str()), file_path, what);
  if (exists <= 0) user_error("checkpoint {} lacks the attribute /meta/{}", file_path, name);
  h5::Attribute attr(rd(H5Aopen(meta, name.c_str(), H5P_DEFAULT), file_path, what));
  h5::Dataspace space(rd(H5Aget_space(attr.get()), file_path, what));
  if (H5Sget_simple_extent_npoints(space.get()) != 1)
    user_error("checkpoint {} has attribute /meta/{} with more than one value", file_path, name);
  return attr;
}

H5T_class_t attribute_class(hid_t attr, const std::string& name, const std::string& file_path) {
  h5::Datatype type(rd(H5Aget_type(attr), file_path, "/meta/" + name));
  return H5Tget_class(type.get());
}

template <class T>
T read_integer_attribute(hid_t meta, const std::string& name, hid_t memory_type, const std::string& file_path) {
  h5::Attribute attr = open_meta_attribute(meta, name, file_path);
  if (attribute_class(attr.get(), name, file_path) != H5T_INTEGER)
    user_error("checkpoint {} has attribute /meta/{} that is not an integer", file_path, name);
  T value = 0;
  rd(H5Aread(attr.get(), memory_type, &value), file_path, "/meta/" + name);
  return value;
}

int64_t read_int_attribute(hid_t meta, const std::string& name, const std::string& file_path) {
  return read_integer_attribute<int64_t>(meta, name, H5T_NATIVE_INT64, file_path);
}

double read_double_attribute(hid_t meta, const std::string& name, const std::string& file_path) {
  h5::Attribute attr = open_meta_attribute(meta, name, file_path);
  H5T_class_t type_class = attribute_class(attr.get(), name, file_path);
  if (type_class != H5T_FLOAT && type_class != H5T_INTEGER)
    user_error("checkpoint {} has attribute /meta/{} that is not a number", file_path, name);
  double value = 0;
  rd(H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &value), file_path, "/meta/" + name);
  return value;
}

// Accepts variable-length strings (what we write) and fixed-length ones (what other tools may write).
std::string read_string_attribute(hid_t meta, const std::string& name, const std::string& file_path) {
  const std::string what = "/meta/" + name;
  h5::Attribute attr = open_meta_attribute(meta, name, file_path);
  h5::Datatype file_type(rd(H5Aget_type(attr.get()), file_path, what));
  if (H5Tget_class(file_type.get()) != H5T_STRING)
    user_error("checkpoint {} has attribute /meta/{} that is not a string", file_path, name);
  htri_t is_variable = rd(H5Tis_variable_str(file_type.get()), file_path, what);
  if (is_variable > 0) {
    h5::Datatype memory_type = variable_utf8_string_type();
    rd(H5Tset_cset(memory_type.get(), H5Tget_cset(file_type.get())), file_path, what);
    char* text = nullptr;
    rd(H5Aread(attr.get(), memory_type.get(), &text), file_path, what);
    std::string value = text ? text : "";
    H5free_memory(text);
    return value;
  }
  // A fixed-length string lives in the attribute's object header, which HDF5 caps at 64 KiB.
  const size_t size = H5Tget_size(file_type.get());
  if (size == 0 || size > 65536)
    user_error("checkpoint {} is corrupt: attribute /meta/{} claims a string of {} bytes (at most 65536 fit in an "
               "HDF5 attribute)", file_path, name, size);
  std::string value(size, '\0');
  rd(H5Aread(attr.get(), file_type.get(), value.data()), file_path, what);
  if (H5Tget_strpad(file_type.get()) == H5T_STR_SPACEPAD) {
    value.erase(value.find_last_not_of(' ') + 1);
  } else {
    value.resize(std::strlen(value.c_str()));
  }
  return value;
}

std::vector<std::string> attribute_names(hid_t meta, const std::string& file_path) {
  LinkNames out;
  hsize_t position = 0;
  rd(H5Aiterate2(meta, H5_INDEX_NAME, H5_ITER_INC, &position, collect_attribute_name, &out), file_path, "/meta");
  return out.names;
}

// The text attributes live in the global heap, which HDF5 does not checksum: format 2 stores their digests.
void check_text_digest(hid_t meta, const std::string& name, const std::string& text, const std::string& file_path) {
  const std::string digest_name = name + "_digest";
  const auto stored = read_integer_attribute<uint64_t>(meta, digest_name, H5T_NATIVE_UINT64, file_path);
  if (stored != fnv1a64(text))
    user_error("checkpoint {} is corrupt: the text of /meta/{} does not match its digest /meta/{}", file_path, name,
               digest_name);
}

CheckpointMeta read_meta(hid_t file, const std::string& file_path) {
  htri_t has_meta = rd(H5Lexists(file, kMetaGroup, H5P_DEFAULT), file_path, "/meta");
  if (has_meta <= 0) user_error("checkpoint {} is not a gantrain checkpoint: it has no /meta group", file_path);
  h5::Group group(rd(H5Gopen2(file, kMetaGroup, H5P_DEFAULT), file_path, "/meta"));
  hid_t g = group.get();
  CheckpointMeta meta;
  meta.format_version = read_int_attribute(g, "format_version", file_path);
  if (meta.format_version < 1 || meta.format_version > kNewestReadableFormat)
    user_error("checkpoint {} has format_version {}; this build reads 1 to {} (a newer gantrain wrote it?)",
               file_path, meta.format_version, kNewestReadableFormat);
  meta.step = read_int_attribute(g, "step", file_path);
  meta.epoch = read_int_attribute(g, "epoch", file_path);
  meta.images_seen = read_int_attribute(g, "images_seen", file_path);
  meta.world_size = read_int_attribute(g, "world_size", file_path);
  meta.seed = read_int_attribute(g, "seed", file_path);
  meta.resolution = read_int_attribute(g, "resolution", file_path);
  meta.alpha = read_double_attribute(g, "alpha", file_path);
  meta.config_yaml = read_string_attribute(g, "config", file_path);
  meta.code_version = read_string_attribute(g, "code_version", file_path);
  if (meta.format_version >= 2) {
    check_text_digest(g, "config", meta.config_yaml, file_path);
    check_text_digest(g, "code_version", meta.code_version, file_path);
  }
  for (const std::string& name : attribute_names(g, file_path)) {
    if (fixed_meta_names().contains(name)) continue;
    h5::Attribute attr(rd(H5Aopen(g, name.c_str(), H5P_DEFAULT), file_path, "/meta/" + name));
    if (attribute_class(attr.get(), name, file_path) != H5T_INTEGER) continue;  // not ours; leave it be
    meta.ints[name] = read_int_attribute(g, name, file_path);
  }
  return meta;
}

// True when the file holds fewer bytes than HDF5's 8-byte signature and those bytes start it.
bool is_cut_signature(const std::string& path, uintmax_t size) {
  static constexpr char kSignature[8] = {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'};
  if (size >= sizeof kSignature) return false;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char head[sizeof kSignature] = {};
  const size_t got = std::fread(head, 1, sizeof head, f);
  std::fclose(f);
  return got == size && std::memcmp(head, kSignature, got) == 0;
}

h5::File open_checkpoint_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) user_error("checkpoint file {} does not exist", path);
  if (std::filesystem::is_directory(path, ec)) user_error("checkpoint path {} is a directory, not a file", path);
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (!ec && size == 0) user_error("checkpoint {} is truncated (it is empty)", path);
  htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
  if (is_hdf5 <= 0) {
    std::string why = h5::take_error_message();
    if (!ec && is_cut_signature(path, size)) user_error("checkpoint {} is truncated (it has {} bytes)", path, size);
    if (is_hdf5 == 0) user_error("checkpoint {} is not a gantrain checkpoint: it is not an HDF5 file", path);
    user_error("cannot read checkpoint file {}: {}", path, why);
  }
  return h5::File(rd(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), path, "the file's superblock"));
}

Checkpoint read_checkpoint(const std::string& path) {
  h5::File file = open_checkpoint_file(path);
  Checkpoint ckpt;
  ckpt.meta = read_meta(file.get(), path);
  h5::Group root(rd(H5Gopen2(file.get(), "/", H5P_DEFAULT), path, "the root group"));
  for (const std::string& name : child_names(root.get(), path, "/")) {
    h5::Object object(rd(H5Oopen(root.get(), name.c_str(), H5P_DEFAULT), path, "/" + name));
    if (H5Iget_type(object.get()) == H5I_DATASET)
      user_error("checkpoint {} has dataset /{} at its root; tensors belong in groups such as /G/params", path, name);
  }
  read_group_tree(root.get(), "", ckpt.meta.format_version, path, ckpt.groups);
  return ckpt;
}

}  // namespace

const Tensor* Checkpoint::find(const std::string& group, const std::string& name) const {
  auto it = groups.find(group);
  if (it == groups.end()) return nullptr;
  for (const auto& [tensor_name, tensor] : it->second)
    if (tensor_name == name) return &tensor;
  return nullptr;
}

namespace {

// Writes through "<path>.tmp": fill it, fsync it, rename it onto path, fsync the directory. A
// checkpoint passes the crash tests' fault points (core/fault_point.h) on the way.
template <class WriteFn>
void write_atomically(const std::string& path, bool is_checkpoint, WriteFn&& write) {
  h5::silence_error_printing();
  const std::string tmp = path + ".tmp";
  try {
    write(tmp);
    fsync_path(tmp, O_RDONLY, "file");
    if (is_checkpoint) fault_point("ckpt_synced");
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      const int err = errno;
      throw OsFailure(fmt::format("cannot rename {} to {}: {}", tmp, path, std::strerror(err)), err);
    }
    if (is_checkpoint) fault_point("ckpt_renamed");
    // Without this the rename itself may not survive a crash, leaving neither name pointing at the data.
    fsync_path(directory_of(path), O_RDONLY | O_DIRECTORY, "directory");
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
}

}  // namespace

void save_checkpoint(const std::string& path, const Checkpoint& ckpt) {
  try {
    write_atomically(path, true, [&](const std::string& tmp) { write_hdf5_file(tmp, ckpt); });
  } catch (const RuntimeError& e) {
    // The reason a user can act on, said plainly; the .tmp is gone and no other file was opened.
    if (const int err = out_of_space_errno(e))
      runtime_error("cannot write checkpoint {}: {} (the earlier checkpoints are untouched)", path,
                    std::strerror(err));
    throw;
  }
}

void save_tensors_h5(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors) {
  write_atomically(path, false, [&](const std::string& tmp) {
    h5::File file(H5_CHECK(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "while creating {}", tmp));
    for (const auto& [name, tensor] : tensors) write_tensor(file.get(), "", name, tensor, Layout::plain);
    H5_CHECK(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), "while flushing {}", tmp);
    H5_CHECK(file.close(), "while closing {}", tmp);
  });
}

Checkpoint parse_checkpoint_hdf5(const std::string& path) {
  h5::silence_error_printing();
  try {
    return read_checkpoint(path);
  } catch (const UserError&) {
    throw;
  } catch (const std::exception& e) {  // e.g. no memory for a tensor: still a sentence naming the file
    user_error("checkpoint {} cannot be read: {}", path, e.what());
  }
}

void reseal_checkpoint(const std::string& path) {
  std::vector<char> bytes;
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) runtime_error("cannot open {} to reseal it", path);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  GT_CHECK(bytes.size() > kDigestBlockBytes &&
               std::string_view(bytes.data(), kDigestMagic.size()) == kDigestMagic,
           "{} is not a format-3 checkpoint (no digest block to reseal)", path);
  fill_digest_block(bytes.data(), bytes.size());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out.flush()) runtime_error("cannot rewrite {} to reseal it", path);
}

namespace {

// How a checkpoint file is sealed: format 3 carries a digest block, older formats do not.
enum class Seal { digest, none };

// Checks the digest block of a format-3 checkpoint against the whole file, reading it with plain I/O
// before HDF5 sees a byte of it: a damaged file is refused here, clearly, and never reaches HDF5's
// error paths. A file without the block (formats 1 and 2, written before it existed) is left to HDF5's
// own checksums.
Seal verify_digest_block(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) user_error("checkpoint file {} does not exist", path);
  if (std::filesystem::is_directory(path, ec)) user_error("checkpoint path {} is a directory, not a file", path);
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) user_error("cannot open checkpoint {}: {}", path, std::strerror(errno));
  std::vector<char> block(kDigestBlockBytes, '\0');
  const size_t got = std::fread(block.data(), 1, block.size(), f.get());
  if (got < kDigestMagic.size() || std::string_view(block.data(), kDigestMagic.size()) != kDigestMagic) {
    if (got >= 3 && std::string_view(block.data(), got).starts_with(kDigestMagic.substr(0, got)))
      user_error("checkpoint {} is truncated (it has {} bytes)", path, got);
    // Formats 1 and 2 start with HDF5's signature. Anything else is damaged or foreign, and HDF5 must
    // not search it for a superblock further in: a format-3 file whose digest block was damaged has
    // one at byte 512, with nothing left to verify it.
    // (Fewer bytes than a signature: open_checkpoint_file names an empty or cut file as truncated.)
    if (got >= kHdf5Signature.size() && std::string_view(block.data(), kHdf5Signature.size()) != kHdf5Signature) {
      char after[kHdf5Signature.size()] = {};
      if (got == kDigestBlockBytes && std::fread(after, 1, sizeof after, f.get()) == sizeof after &&
          std::string_view(after, sizeof after) == kHdf5Signature)
        user_error("checkpoint {} is corrupt: its digest block (the first {} bytes) is damaged", path,
                   kDigestBlockBytes);
      user_error("checkpoint {} is not a gantrain checkpoint: it is not an HDF5 file", path);
    }
    return Seal::none;
  }
  // "format 3\nbytes N\nxxh3_128 HEX\n" after the magic line.
  const std::string text(block.data() + kDigestMagic.size(), strnlen(block.data() + kDigestMagic.size(),
                                                                       block.size() - kDigestMagic.size()));
  long long format = 0;
  unsigned long long bytes = 0;
  char hex[33] = {};
  if (got < kDigestBlockBytes) user_error("checkpoint {} is truncated (it has {} bytes)", path, got);
  if (std::sscanf(text.c_str(), "format %lld\nbytes %llu\nxxh3_128 %32[0-9a-f]\n", &format, &bytes, hex) != 3 ||
      std::strlen(hex) != 32)
    user_error("checkpoint {} is corrupt: its digest block (the first {} bytes) is damaged", path, kDigestBlockBytes);
  if (format > kNewestReadableFormat)
    user_error("checkpoint {} has format_version {}; this build reads 1 to {} (a newer gantrain wrote it?)", path,
               format, kNewestReadableFormat);
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) user_error("cannot read the size of checkpoint {}: {}", path, ec.message());
  if (size < bytes) user_error("checkpoint {} is truncated (it has {} of its {} bytes)", path, size, bytes);
  if (size > bytes)
    user_error("checkpoint {} is corrupt: it has {} bytes, but it was written with {} (bytes were added or it was "
               "modified after it was written)",
               path, size, bytes);
  XXH3_state_t* state = XXH3_createState();
  GT_CHECK(state != nullptr, "out of memory for a digest state");
  std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)> owned(state, &XXH3_freeState);
  XXH3_128bits_reset(state);
  std::vector<char> buffer(size_t{1} << 20);
  uint64_t left = bytes - kDigestBlockBytes;
  while (left > 0) {
    const size_t n = std::fread(buffer.data(), 1, static_cast<size_t>(std::min<uint64_t>(left, buffer.size())), f.get());
    if (n == 0) user_error("cannot read checkpoint {}: {}", path, std::ferror(f.get()) ? std::strerror(errno) : "it ended early");
    XXH3_128bits_update(state, buffer.data(), n);
    left -= n;
  }
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(state));
  std::string actual;
  for (unsigned char byte : canonical.digest) actual += fmt::format("{:02x}", byte);
  if (actual != hex)
    user_error("checkpoint {} is corrupt: its contents do not match the digest written with it (the file changed "
               "after it was written)",
               path);
  return Seal::digest;
}

}  // namespace

bool looks_like_sealed_checkpoint(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return false;
  std::string head(kDigestBlockBytes + kHdf5Signature.size(), '\0');
  head.resize(std::fread(head.data(), 1, head.size(), f.get()));
  return head.starts_with(kDigestMagic) ||
         (head.size() == kDigestBlockBytes + kHdf5Signature.size() && head.ends_with(kHdf5Signature));
}

std::string verify_checkpoint_hdf5(const std::string& path) {
  parse_checkpoint_hdf5(path);
  return "";
}

Checkpoint load_checkpoint(const std::string& path) {
  h5::silence_error_printing();
  const Seal seal = verify_digest_block(path);
  // Nothing vouches for a file without the digest block: HDF5 parses it in a separate process first,
  // so damage that crashes or hangs the library refuses the file instead of ending the run.
  if (seal == Seal::none) check_file_or_refuse("checkpoint", path, &verify_checkpoint_hdf5, "checkpoint " + path);
  try {
    Checkpoint ck = read_checkpoint(path);
    // A format-3 file is always sealed; one without its block was rewritten by another tool.
    if (seal == Seal::none && ck.meta.format_version >= 3)
      user_error("checkpoint {} is corrupt: it says format_version {} but lacks its digest block (was it rewritten "
                 "by another tool?)",
                 path, ck.meta.format_version);
    if (seal == Seal::digest && ck.meta.format_version < 3)
      user_error("checkpoint {} is corrupt: it has a digest block but says format_version {}", path,
                 ck.meta.format_version);
    return ck;
  } catch (const UserError&) {
    throw;
  } catch (const std::exception& e) {  // e.g. no memory for a tensor: still a sentence naming the file
    user_error("checkpoint {} cannot be read: {}", path, e.what());
  }
}

std::string checkpoint_problem(const std::string& path) {
  try {
    load_checkpoint(path);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "checkpoint " + path + " cannot be read (an unknown error)";
  }
}

std::string first_nonfinite_tensor(const Checkpoint& ck) {
  for (const auto& [group, tensors] : ck.groups) {
    for (const auto& [name, t] : tensors) {
      if (t.dtype() != DType::f32) continue;
      const float* v = t.f32();
      for (int64_t i = 0; i < t.numel(); ++i)
        if (!std::isfinite(v[i])) return group + "/" + name;
    }
  }
  return "";
}

}  // namespace gt

namespace gt {

int h5_file_lookup(const std::string& path, const std::string& object) {
  h5::silence_error_printing();
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    h5::take_error_message();
    return -2;
  }
  h5::File file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!file.valid()) {
    h5::take_error_message();
    return -2;
  }
  const htri_t exists = H5Lexists(file.get(), object.c_str(), H5P_DEFAULT);
  h5::take_error_message();
  return exists < 0 ? -1 : exists > 0 ? 1 : 0;
}

}  // namespace gt
