// HDF5 checkpoint writer and reader: /meta attributes plus one group per TensorGroups entry, one dataset per tensor.
#include "io/checkpoint.h"
#include "io/h5_tensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include "io/h5util.h"

namespace gt {

namespace {

constexpr int64_t kNewestReadableFormat = 1;
constexpr const char* kMetaGroup = "meta";

// Attributes of /meta that have their own CheckpointMeta field; every other integer attribute goes to meta.ints.
const std::set<std::string>& fixed_meta_names() {
  static const std::set<std::string> names = {"format_version", "step",  "epoch",  "images_seen",
                                              "world_size",     "seed",  "resolution", "alpha",
                                              "config",         "code_version"};
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

void write_meta(hid_t file, const CheckpointMeta& meta) {
  h5::Group group = open_or_create_group(file, kMetaGroup);
  hid_t g = group.get();
  write_int_attribute(g, "format_version", meta.format_version);
  write_int_attribute(g, "step", meta.step);
  write_int_attribute(g, "epoch", meta.epoch);
  write_int_attribute(g, "images_seen", meta.images_seen);
  write_int_attribute(g, "world_size", meta.world_size);
  write_int_attribute(g, "seed", meta.seed);
  write_int_attribute(g, "resolution", meta.resolution);
  write_double_attribute(g, "alpha", meta.alpha);
  write_string_attribute(g, "config", meta.config_yaml);
  write_string_attribute(g, "code_version", meta.code_version);
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

void write_tensor(hid_t group, const std::string& group_path, const std::string& name, const Tensor& t) {
  GT_CHECK(!name.empty() && name.find('/') == std::string::npos && name != ".",
           "tensor name '{}' in checkpoint group {} must be non-empty and contain no '/'", name, group_path);
  GT_CHECK(t.defined(), "tensor {}/{} is undefined", group_path, name);
  GT_CHECK(t.device() == Device::cpu, "tensor {}/{} must be copied to the CPU before saving", group_path, name);
  h5::Dataspace space = dataspace_for(t.shape());
  h5::Dataset dataset(H5_CHECK(H5Dcreate2(group, name.c_str(), file_type_of(t), space.get(), H5P_DEFAULT,
                                          H5P_DEFAULT, H5P_DEFAULT),
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
    for (const auto& [name, tensor] : tensors) write_tensor(group.get(), path, name, tensor);
  }
}

void write_hdf5_file(const std::string& path, const Checkpoint& ckpt) {
  h5::PropList create_plist(H5_CHECK(H5Pcreate(H5P_FILE_CREATE), "while making a file property list"));
  H5_CHECK(H5Pset_link_creation_order(create_plist.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED),
           "while asking for an ordered root group");
  h5::File file(H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, create_plist.get(), H5P_DEFAULT),
                         "while creating checkpoint file {}", path));
  write_meta(file.get(), ckpt.meta);
  write_groups(file.get(), ckpt.groups);
  H5_CHECK(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), "while flushing {}", path);
  H5_CHECK(file.close(), "while closing {}", path);
}

void fsync_path(const std::string& path, int open_flags, const char* what) {
  int fd = ::open(path.c_str(), open_flags);
  if (fd < 0) runtime_error("cannot open {} {} to sync it: {}", what, path, std::strerror(errno));
  int rc = ::fsync(fd);
  int sync_errno = errno;
  ::close(fd);
  if (rc != 0) runtime_error("cannot sync {} {} to disk: {}", what, path, std::strerror(sync_errno));
}

std::string directory_of(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

// ---- reading -----------------------------------------------------------------------------------

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

// Children in creation order where the group tracks it (ours do), else by name (files from other writers).
std::vector<std::string> child_names(hid_t group, const std::string& file_path, const std::string& group_path) {
  h5::PropList plist(H5_CHECK(H5Gget_create_plist(group), "while reading group {} of {}", group_path, file_path));
  unsigned order_flags = 0;
  H5_CHECK(H5Pget_link_creation_order(plist.get(), &order_flags), "while reading group {} of {}", group_path,
           file_path);
  H5_index_t index = (order_flags & H5P_CRT_ORDER_INDEXED) ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME;
  LinkNames out;
  hsize_t position = 0;
  H5_CHECK(H5Literate(group, index, H5_ITER_INC, &position, collect_link_name, &out),
           "while listing group {} of {}", group_path, file_path);
  return out.names;
}

DType dtype_for_dataset(hid_t dataset, const std::string& file_path, const std::string& dataset_path) {
  h5::Datatype type(H5_CHECK(H5Dget_type(dataset), "while reading the type of {} in {}", dataset_path, file_path));
  H5T_class_t type_class = H5Tget_class(type.get());
  if (type_class == H5T_FLOAT) return DType::f32;
  if (type_class == H5T_INTEGER) {
    bool is_u8 = H5Tget_size(type.get()) == 1 && H5Tget_sign(type.get()) == H5T_SGN_NONE;
    return is_u8 ? DType::u8 : DType::i64;
  }
  user_error("checkpoint {} holds dataset {} of a type that is neither float nor integer", file_path, dataset_path);
}

Tensor read_tensor(hid_t dataset, const std::string& file_path, const std::string& dataset_path) {
  DType dtype = dtype_for_dataset(dataset, file_path, dataset_path);
  h5::Dataspace space(H5_CHECK(H5Dget_space(dataset), "while reading the shape of {} in {}", dataset_path,
                               file_path));
  H5S_class_t space_class = H5Sget_simple_extent_type(space.get());
  if (space_class != H5S_SCALAR && space_class != H5S_SIMPLE)
    user_error("checkpoint {} holds dataset {} with no shape (an empty dataspace)", file_path, dataset_path);
  int ndims = H5_CHECK(H5Sget_simple_extent_ndims(space.get()), "while reading the shape of {} in {}",
                       dataset_path, file_path);
  std::vector<hsize_t> dims(static_cast<size_t>(ndims));
  H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), "while reading the shape of {} in {}",
           dataset_path, file_path);
  Tensor tensor(Shape(dims.begin(), dims.end()), dtype);
  if (tensor.numel() == 0) return tensor;
  H5_CHECK(H5Dread(dataset, memory_type_of(dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, tensor.raw()),
           "while reading dataset {} of {}", dataset_path, file_path);
  return tensor;
}

// Walks the tree below `group`; datasets directly inside a group become that group's TensorGroups entry.
void read_group_tree(hid_t group, const std::string& group_path, const std::string& file_path, TensorGroups& out) {
  std::vector<std::string> names = child_names(group, file_path, group_path.empty() ? "/" : group_path);
  // A leaf group was saved as an entry with no tensors; keep it so the round trip is exact.
  if (names.empty() && !group_path.empty()) out[group_path];
  for (const std::string& name : names) {
    if (group_path.empty() && name == kMetaGroup) continue;
    std::string child_path = group_path.empty() ? name : group_path + "/" + name;
    h5::Object object(H5_CHECK(H5Oopen(group, name.c_str(), H5P_DEFAULT), "while opening {} in {}", child_path,
                               file_path));
    H5I_type_t kind = H5Iget_type(object.get());
    if (kind == H5I_GROUP) {
      read_group_tree(object.get(), child_path, file_path, out);
    } else if (kind == H5I_DATASET) {
      GT_CHECK(!group_path.empty(), "unreachable: root datasets are rejected below");
      out[group_path].emplace_back(name, read_tensor(object.get(), file_path, child_path));
    }
    // Named datatypes are not part of the format; skip them rather than refuse the file.
  }
}

h5::Attribute open_meta_attribute(hid_t meta, const std::string& name, const std::string& file_path) {
  htri_t exists = H5_CHECK(H5Aexists(meta, name.c_str()), "while looking for /meta/{} in {}", name, file_path);
  if (exists <= 0) user_error("checkpoint {} lacks the attribute /meta/{}", file_path, name);
  h5::Attribute attr(H5_CHECK(H5Aopen(meta, name.c_str(), H5P_DEFAULT), "while opening /meta/{} in {}", name,
                              file_path));
  h5::Dataspace space(H5_CHECK(H5Aget_space(attr.get()), "while reading /meta/{} in {}", name, file_path));
  if (H5Sget_simple_extent_npoints(space.get()) != 1)
    user_error("checkpoint {} has attribute /meta/{} with more than one value", file_path, name);
  return attr;
}

H5T_class_t attribute_class(hid_t attr, const std::string& name, const std::string& file_path) {
  h5::Datatype type(H5_CHECK(H5Aget_type(attr), "while reading the type of /meta/{} in {}", name, file_path));
  return H5Tget_class(type.get());
}

int64_t read_int_attribute(hid_t meta, const std::string& name, const std::string& file_path) {
  h5::Attribute attr = open_meta_attribute(meta, name, file_path);
  if (attribute_class(attr.get(), name, file_path) != H5T_INTEGER)
    user_error("checkpoint {} has attribute /meta/{} that is not an integer", file_path, name);
  int64_t value = 0;
  H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, &value), "while reading /meta/{} in {}", name, file_path);
  return value;
}

double read_double_attribute(hid_t meta, const std::string& name, const std::string& file_path) {
  h5::Attribute attr = open_meta_attribute(meta, name, file_path);
  H5T_class_t type_class = attribute_class(attr.get(), name, file_path);
  if (type_class != H5T_FLOAT && type_class != H5T_INTEGER)
    user_error("checkpoint {} has attribute /meta/{} that is not a number", file_path, name);
  double value = 0;
  H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &value), "while reading /meta/{} in {}", name, file_path);
  return value;
}

// Accepts variable-length strings (what we write) and fixed-length ones (what other tools may write).
std::string read_string_attribute(hid_t meta, const std::string& name, const std::string& file_path) {
  h5::Attribute attr = open_meta_attribute(meta, name, file_path);
  h5::Datatype file_type(H5_CHECK(H5Aget_type(attr.get()), "while reading /meta/{} in {}", name, file_path));
  if (H5Tget_class(file_type.get()) != H5T_STRING)
    user_error("checkpoint {} has attribute /meta/{} that is not a string", file_path, name);
  htri_t is_variable = H5_CHECK(H5Tis_variable_str(file_type.get()), "while reading /meta/{} in {}", name,
                                file_path);
  if (is_variable > 0) {
    h5::Datatype memory_type = variable_utf8_string_type();
    H5_CHECK(H5Tset_cset(memory_type.get(), H5Tget_cset(file_type.get())), "while reading /meta/{} in {}", name,
             file_path);
    char* text = nullptr;
    H5_CHECK(H5Aread(attr.get(), memory_type.get(), &text), "while reading /meta/{} in {}", name, file_path);
    std::string value = text ? text : "";
    H5free_memory(text);
    return value;
  }
  size_t size = H5Tget_size(file_type.get());
  std::string value(size, '\0');
  H5_CHECK(H5Aread(attr.get(), file_type.get(), value.data()), "while reading /meta/{} in {}", name, file_path);
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
  H5_CHECK(H5Aiterate2(meta, H5_INDEX_NAME, H5_ITER_INC, &position, collect_attribute_name, &out),
           "while listing the attributes of /meta in {}", file_path);
  return out.names;
}

CheckpointMeta read_meta(hid_t file, const std::string& file_path) {
  htri_t has_meta = H5_CHECK(H5Lexists(file, kMetaGroup, H5P_DEFAULT), "while looking for /meta in {}", file_path);
  if (has_meta <= 0) user_error("{} is an HDF5 file but not a gantrain checkpoint: it has no /meta group", file_path);
  h5::Group group(H5_CHECK(H5Gopen2(file, kMetaGroup, H5P_DEFAULT), "while opening /meta in {}", file_path));
  hid_t g = group.get();
  CheckpointMeta meta;
  meta.format_version = read_int_attribute(g, "format_version", file_path);
  if (meta.format_version < 1 || meta.format_version > kNewestReadableFormat)
    user_error("checkpoint {} has format_version {}; this build reads format 1 to {} (a newer gantrain wrote it?)",
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
  for (const std::string& name : attribute_names(g, file_path)) {
    if (fixed_meta_names().contains(name)) continue;
    h5::Attribute attr(H5_CHECK(H5Aopen(g, name.c_str(), H5P_DEFAULT), "while opening /meta/{} in {}", name,
                                file_path));
    if (attribute_class(attr.get(), name, file_path) != H5T_INTEGER) continue;  // not ours; leave it be
    meta.ints[name] = read_int_attribute(g, name, file_path);
  }
  return meta;
}

h5::File open_checkpoint_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) user_error("checkpoint file {} does not exist", path);
  if (std::filesystem::is_directory(path, ec)) user_error("checkpoint path {} is a directory, not a file", path);
  htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
  if (is_hdf5 <= 0) {
    std::string why = h5::take_error_message();
    if (is_hdf5 == 0) user_error("checkpoint file {} is not an HDF5 file", path);
    user_error("cannot read checkpoint file {}: {}", path, why);
  }
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) user_error("cannot open checkpoint file {}: {}", path, h5::take_error_message());
  return h5::File(id);
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

// Writes through "<path>.tmp": fill it, fsync it, rename it onto path, fsync the directory.
template <class WriteFn>
void write_atomically(const std::string& path, WriteFn&& write) {
  h5::silence_error_printing();
  const std::string tmp = path + ".tmp";
  try {
    write(tmp);
    fsync_path(tmp, O_RDONLY, "file");
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      runtime_error("cannot rename {} to {}: {}", tmp, path, std::strerror(errno));
    // Without this the rename itself may not survive a crash, leaving neither name pointing at the data.
    fsync_path(directory_of(path), O_RDONLY | O_DIRECTORY, "directory");
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
}

}  // namespace

void save_checkpoint(const std::string& path, const Checkpoint& ckpt) {
  write_atomically(path, [&](const std::string& tmp) { write_hdf5_file(tmp, ckpt); });
}

void save_tensors_h5(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors) {
  write_atomically(path, [&](const std::string& tmp) {
    h5::File file(H5_CHECK(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "while creating {}", tmp));
    for (const auto& [name, tensor] : tensors) write_tensor(file.get(), "", name, tensor);
    H5_CHECK(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), "while flushing {}", tmp);
    H5_CHECK(file.close(), "while closing {}", tmp);
  });
}

Checkpoint load_checkpoint(const std::string& path) {
  h5::silence_error_printing();
  h5::File file = open_checkpoint_file(path);
  Checkpoint ckpt;
  ckpt.meta = read_meta(file.get(), path);
  h5::Group root(H5_CHECK(H5Gopen2(file.get(), "/", H5P_DEFAULT), "while opening the root group of {}", path));
  for (const std::string& name : child_names(root.get(), path, "/")) {
    h5::Object object(H5_CHECK(H5Oopen(root.get(), name.c_str(), H5P_DEFAULT), "while opening {} in {}", name, path));
    if (H5Iget_type(object.get()) == H5I_DATASET)
      user_error("checkpoint {} has dataset /{} at its root; tensors belong in groups such as /G/params", path, name);
  }
  read_group_tree(root.get(), "", path, ckpt.groups);
  return ckpt;
}

}  // namespace gt

namespace gt {

bool h5_file_has(const std::string& path, const std::string& object) {
  h5::silence_error_printing();
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    h5::take_error_message();
    return false;
  }
  h5::File file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!file.valid()) {
    h5::take_error_message();
    return false;
  }
  const htri_t exists = H5Lexists(file.get(), object.c_str(), H5P_DEFAULT);
  h5::take_error_message();
  return exists > 0;
}

}  // namespace gt
