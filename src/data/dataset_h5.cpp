// The HDF5 dataset file: chunked /images uint8 [N,H,W,C] (+ /labels int64 [N]); writer with tmp+rename, validating reader.
#include "data/dataset_h5.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <vector>

#include "core/file_check.h"
#include "core/version.h"
#include "data/image_decode.h"
#include "io/h5util.h"

namespace gt {

namespace fs = std::filesystem;

namespace {

constexpr const char* kImages = "images";
constexpr const char* kLabels = "labels";
// A chunk holds this many bytes at least (several small images per chunk, one large image per
// chunk), so the chunk index stays small while a random read still touches one image's bytes.
constexpr size_t kMinChunkBytes = 16 * 1024;
constexpr int64_t kMaxSamplesPerChunk = 64;
constexpr int64_t kLabelsPerChunk = 4096;
// What a file may claim, checked before any memory is sized from it. Deflate expands at most 1032:1,
// so compressed data cannot unpack to more than this many times the file's own size.
constexpr uint64_t kMaxDeflateRatio = 1032;
constexpr uint64_t kMaxChannels = 4;  // gray, gray+alpha, RGB, RGBA
constexpr uint64_t kMaxChunkBytes = uint64_t{1} << 30;
// The most chunks verify_dataset_file looks up one by one (about a second per million on a local disk):
// a file chunked finer than this is refused with a hint to ingest it again.
constexpr uint64_t kMaxCheckedChunks = uint64_t{1} << 24;
// The writer's buffer: large writes, few extents.
constexpr size_t kWriteBufferBytes = 16u << 20;

int64_t samples_per_chunk_for(size_t sample_bytes) {
  const int64_t k = static_cast<int64_t>((kMinChunkBytes + sample_bytes - 1) / sample_bytes);
  return std::clamp<int64_t>(k, 1, kMaxSamplesPerChunk);
}

// Chunks are read once per epoch and in random order, so HDF5's chunk cache would only add a copy;
// with no cache, unfiltered chunks are read straight into the caller's buffer.
h5::PropList uncached_dataset_access() {
  h5::PropList dapl(H5_CHECK(H5Pcreate(H5P_DATASET_ACCESS), "while making a dataset access property list"));
  H5_CHECK(H5Pset_chunk_cache(dapl.get(), H5D_CHUNK_CACHE_NSLOTS_DEFAULT, 0, H5D_CHUNK_CACHE_W0_DEFAULT),
           "while turning off the chunk cache");
  return dapl;
}

// Shared locks on local disks; where the file system has no locking at all (some Lustre and NFS
// mounts), open anyway instead of failing. HDF5_USE_FILE_LOCKING=FALSE in the environment wins.
h5::PropList file_access() {
  h5::PropList fapl(H5_CHECK(H5Pcreate(H5P_FILE_ACCESS), "while making a file access property list"));
#if H5_VERSION_GE(1, 10, 7)
  H5_CHECK(H5Pset_file_locking(fapl.get(), true, true), "while setting file locking");
#endif
  return fapl;
}

void write_int_attribute(hid_t loc, const char* name, int64_t value) {
  h5::Dataspace space(H5_CHECK(H5Screate(H5S_SCALAR), "while making a scalar dataspace"));
  h5::Attribute attr(H5_CHECK(H5Acreate2(loc, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                              "while creating attribute {}", name));
  H5_CHECK(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), "while writing attribute {}", name);
}

// Variable-length UTF-8, which h5py reads as str.
void write_string_attribute(hid_t loc, const char* name, const std::string& value) {
  h5::Datatype type(H5_CHECK(H5Tcopy(H5T_C_S1), "while copying the string type"));
  H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE), "while making a variable-length string type");
  H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8), "while making a UTF-8 string type");
  h5::Dataspace space(H5_CHECK(H5Screate(H5S_SCALAR), "while making a scalar dataspace"));
  h5::Attribute attr(H5_CHECK(H5Acreate2(loc, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                              "while creating attribute {}", name));
  const char* text = value.c_str();
  H5_CHECK(H5Awrite(attr.get(), type.get(), &text), "while writing attribute {}", name);
}

void fsync_path(const std::string& path, int open_flags, const char* what) {
  const int fd = ::open(path.c_str(), open_flags);
  if (fd < 0) runtime_error("cannot open {} {} to sync it: {}", what, path, std::strerror(errno));
  const int rc = ::fsync(fd);
  const int sync_errno = errno;
  ::close(fd);
  if (rc != 0) runtime_error("cannot sync {} {} to disk: {}", what, path, std::strerror(sync_errno));
}

std::string directory_of(const std::string& path) {
  const std::string dir = fs::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

// "uint8", "int16", "float32", "string", ...: how a user would name an HDF5 element type.
std::string type_name(hid_t type) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t bits = H5Tget_size(type) * 8;
  switch (cls) {
    case H5T_INTEGER: return fmt::format("{}int{}", H5Tget_sign(type) == H5T_SGN_NONE ? "u" : "", bits);
    case H5T_FLOAT: return fmt::format("float{}", bits);
    case H5T_STRING: return "string";
    case H5T_COMPOUND: return "compound";
    default: return fmt::format("HDF5 type class {}", static_cast<int>(cls));
  }
}

std::string shape_text(const std::vector<hsize_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += fmt::format("{}{}", i ? ", " : "", dims[i]);
  return s + "]";
}

std::vector<hsize_t> dims_of(hid_t dataset) {
  h5::Dataspace space(H5_CHECK(H5Dget_space(dataset), "while reading a dataset's shape"));
  const int rank = H5_CHECK(H5Sget_simple_extent_ndims(space.get()), "while reading a dataset's rank");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), "while reading a dataset's shape");
  return dims;
}

bool has_attribute(hid_t loc, const char* name) {
  return H5_CHECK(H5Aexists(loc, name), "while looking for attribute {}", name) > 0;
}

// A string attribute of either kind (variable-length from h5py and from us, fixed-length from others).
std::string read_string_attribute(hid_t loc, const char* name, const std::string& file) {
  h5::Attribute attr(H5_CHECK(H5Aopen(loc, name, H5P_DEFAULT), "while opening attribute {} of {}", name, file));
  h5::Datatype type(H5_CHECK(H5Aget_type(attr.get()), "while reading the type of attribute {}", name));
  if (H5Tget_class(type.get()) != H5T_STRING)
    user_error("dataset file {}: attribute {} should be text but is {}", file, name, type_name(type.get()));
  if (H5Tis_variable_str(type.get()) > 0) {
    h5::Datatype memory_type(H5_CHECK(H5Tcopy(H5T_C_S1), "while copying the string type"));
    H5_CHECK(H5Tset_size(memory_type.get(), H5T_VARIABLE), "while making a variable-length string type");
    H5_CHECK(H5Tset_cset(memory_type.get(), H5Tget_cset(type.get())), "while setting a string type's character set");
    char* text = nullptr;
    H5_CHECK(H5Aread(attr.get(), memory_type.get(), &text), "while reading attribute {} of {}", name, file);
    std::string value = text ? text : "";
    H5free_memory(text);
    return value;
  }
  // A fixed-length string lives in the attribute's object header, which HDF5 caps at 64 KiB.
  const size_t size = H5Tget_size(type.get());
  if (size == 0 || size > 65536)
    user_error("dataset file {}: attribute {} claims a string of {} bytes (at most 65536 fit in an HDF5 attribute)",
               file, name, size);
  std::string value(size, '\0');
  H5_CHECK(H5Aread(attr.get(), type.get(), value.data()), "while reading attribute {} of {}", name, file);
  value.resize(std::strlen(value.c_str()));
  return value;
}

int64_t read_int_attribute(hid_t loc, const char* name, const std::string& file) {
  h5::Attribute attr(H5_CHECK(H5Aopen(loc, name, H5P_DEFAULT), "while opening attribute {} of {}", name, file));
  h5::Datatype type(H5_CHECK(H5Aget_type(attr.get()), "while reading the type of attribute {}", name));
  if (H5Tget_class(type.get()) != H5T_INTEGER)
    user_error("dataset file {}: attribute {} should be an integer but is {}", file, name, type_name(type.get()));
  int64_t value = 0;
  H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, &value), "while reading attribute {} of {}", name, file);
  return value;
}

// Reads rows [first, first + count) of a dataset whose first dimension counts samples, one hyperslab
// per call. The dataspaces live as long as the RowReader: one batch makes hundreds of calls, and
// making two dataspaces per call costs about as much as the read itself for small images.
class RowReader {
 public:
  RowReader(hid_t dataset, hid_t memory_type, const std::vector<hsize_t>& dims, const std::string& file)
      : dataset_(dataset), memory_type_(memory_type), dims_(dims), file_(file),
        file_space_(H5_CHECK(H5Dget_space(dataset), "while reading from {}", file)) {}

  void read(int64_t first, int64_t count, void* out) {
    std::vector<hsize_t> start(dims_.size(), 0), block = dims_;
    start[0] = static_cast<hsize_t>(first);
    block[0] = static_cast<hsize_t>(count);
    H5_CHECK(H5Sselect_hyperslab(file_space_.get(), H5S_SELECT_SET, start.data(), nullptr, block.data(), nullptr),
             "while selecting rows {}..{} of {}", first, first + count, file_);
    if (count != memory_rows_) {
      memory_space_ = h5::Dataspace(H5_CHECK(H5Screate_simple(static_cast<int>(block.size()), block.data(), nullptr),
                                             "while describing a read buffer"));
      memory_rows_ = count;
    }
    H5_CHECK(H5Dread(dataset_, memory_type_, memory_space_.get(), file_space_.get(), H5P_DEFAULT, out),
             "while reading rows {}..{} of {}", first, first + count, file_);
  }

 private:
  hid_t dataset_, memory_type_;
  const std::vector<hsize_t>& dims_;
  const std::string& file_;
  h5::Dataspace file_space_, memory_space_;
  int64_t memory_rows_ = -1;
};

// Gathers rows `indices` into out (row_bytes each, in the order given): sorts the indices, reads
// each run of consecutive indices with one read_run(first, count, dst) call, straight into out when
// the run's destinations are consecutive too (always for runs of one), else through a scratch buffer.
template <class ReadRun>
void gather_rows(std::span<const int64_t> indices, size_t row_bytes, uint8_t* out, ReadRun&& read_run) {
  const size_t n = indices.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return indices[a] < indices[b]; });
  std::vector<uint8_t> scratch;
  for (size_t begin = 0; begin < n;) {
    size_t end = begin + 1;
    while (end < n && indices[order[end]] == indices[order[end - 1]] + 1) ++end;
    const int64_t first = indices[order[begin]];
    const int64_t count = static_cast<int64_t>(end - begin);
    bool destinations_consecutive = true;
    for (size_t j = begin + 1; j < end && destinations_consecutive; ++j)
      destinations_consecutive = order[j] == order[j - 1] + 1;
    if (destinations_consecutive) {
      read_run(first, count, out + order[begin] * row_bytes);
    } else {
      scratch.resize(static_cast<size_t>(count) * row_bytes);
      read_run(first, count, scratch.data());
      for (size_t j = begin; j < end; ++j)
        std::memcpy(out + order[j] * row_bytes, scratch.data() + (j - begin) * row_bytes, row_bytes);
    }
    begin = end;
  }
}

}  // namespace

std::string DatasetInfo::describe() const {
  std::string s = fmt::format("{}: {} images {}x{}x{}", path, count, height, width, channels);
  if (has_labels) s += ", with labels";
  if (!source.empty()) s += fmt::format(", from {}", source);
  return s;
}

// ---- writer --------------------------------------------------------------------------------------

struct DatasetWriter::Impl {
  std::string path, tmp_path;
  int height, width, channels;
  bool with_labels;
  size_t sample_bytes;
  int64_t buffer_capacity;  // samples; a multiple of the chunk so only the last flush writes a partial chunk
  h5::File file;
  h5::Dataset images, labels;
  std::vector<uint8_t> pixel_buffer;
  std::vector<int64_t> label_buffer;
  int64_t buffered = 0, written = 0;
  bool open = false;

  void create();
  void flush();
  void close_and_remove();
};

void DatasetWriter::Impl::create() {
  h5::silence_error_printing();
  if (!fs::is_directory(directory_of(path)))
    user_error("cannot write dataset {}: directory {} does not exist", path, directory_of(path));
  h5::PropList fapl = file_access();
#if H5_VERSION_GE(1, 10, 2)
  // The 1.10 file format indexes the chunks of a growing dataset with an extensible array instead of
  // a B-tree: random reads of small images are about 15% faster. Readers need HDF5 1.10 (2016) or newer.
  H5_CHECK(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_V110), "while choosing the file format");
#endif
  file = h5::File(H5Fcreate(tmp_path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()));
  if (!file.valid()) user_error("cannot create dataset file {}: {}", tmp_path, h5::take_error_message());
  open = true;

  const int64_t per_chunk = samples_per_chunk_for(sample_bytes);
  buffer_capacity = per_chunk * std::max<int64_t>(1, static_cast<int64_t>(kWriteBufferBytes / (sample_bytes * per_chunk)));
  pixel_buffer.resize(static_cast<size_t>(buffer_capacity) * sample_bytes);

  const hsize_t dims[4] = {0, static_cast<hsize_t>(height), static_cast<hsize_t>(width), static_cast<hsize_t>(channels)};
  const hsize_t max_dims[4] = {H5S_UNLIMITED, dims[1], dims[2], dims[3]};
  const hsize_t chunk[4] = {static_cast<hsize_t>(per_chunk), dims[1], dims[2], dims[3]};
  h5::Dataspace space(H5_CHECK(H5Screate_simple(4, dims, max_dims), "while describing /images of {}", tmp_path));
  h5::PropList dcpl(H5_CHECK(H5Pcreate(H5P_DATASET_CREATE), "while making a dataset property list"));
  H5_CHECK(H5Pset_chunk(dcpl.get(), 4, chunk), "while setting the chunk shape of /images");
  // Every byte is written by append, so filling chunks first would only double the writes.
  H5_CHECK(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER), "while turning off fill values");
  h5::PropList dapl = uncached_dataset_access();
  images = h5::Dataset(H5_CHECK(H5Dcreate2(file.get(), kImages, H5T_STD_U8LE, space.get(), H5P_DEFAULT, dcpl.get(),
                                           dapl.get()),
                                "while creating /images in {}", tmp_path));
  if (!with_labels) return;
  label_buffer.resize(static_cast<size_t>(buffer_capacity));
  const hsize_t label_dims[1] = {0}, label_max[1] = {H5S_UNLIMITED}, label_chunk[1] = {kLabelsPerChunk};
  h5::Dataspace label_space(H5_CHECK(H5Screate_simple(1, label_dims, label_max), "while describing /labels"));
  h5::PropList label_dcpl(H5_CHECK(H5Pcreate(H5P_DATASET_CREATE), "while making a dataset property list"));
  H5_CHECK(H5Pset_chunk(label_dcpl.get(), 1, label_chunk), "while setting the chunk shape of /labels");
  labels = h5::Dataset(H5_CHECK(H5Dcreate2(file.get(), kLabels, H5T_STD_I64LE, label_space.get(), H5P_DEFAULT,
                                           label_dcpl.get(), H5P_DEFAULT),
                                "while creating /labels in {}", tmp_path));
}

void DatasetWriter::Impl::flush() {
  if (buffered == 0) return;
  auto write_rows = [&](hid_t dataset, hid_t memory_type, std::vector<hsize_t> dims, const void* data) {
    const hsize_t first = static_cast<hsize_t>(written);
    dims[0] = static_cast<hsize_t>(written + buffered);
    H5_CHECK(H5Dset_extent(dataset, dims.data()), "while growing {} to {} images", tmp_path, dims[0]);
    h5::Dataspace file_space(H5_CHECK(H5Dget_space(dataset), "while writing {}", tmp_path));
    std::vector<hsize_t> start(dims.size(), 0), block = dims;
    start[0] = first;
    block[0] = static_cast<hsize_t>(buffered);
    H5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, block.data(), nullptr),
             "while selecting images {}.. of {}", first, tmp_path);
    h5::Dataspace memory_space(H5_CHECK(H5Screate_simple(static_cast<int>(block.size()), block.data(), nullptr),
                                        "while describing a write buffer"));
    H5_CHECK(H5Dwrite(dataset, memory_type, memory_space.get(), file_space.get(), H5P_DEFAULT, data),
             "while writing images {}.. to {}", first, tmp_path);
  };
  write_rows(images.get(), H5T_NATIVE_UINT8,
             {0, static_cast<hsize_t>(height), static_cast<hsize_t>(width), static_cast<hsize_t>(channels)},
             pixel_buffer.data());
  if (with_labels) write_rows(labels.get(), H5T_NATIVE_INT64, {0}, label_buffer.data());
  written += buffered;
  buffered = 0;
}

void DatasetWriter::Impl::close_and_remove() {
  if (!open) return;
  labels.reset();
  images.reset();
  file.reset();
  std::remove(tmp_path.c_str());
  open = false;
}

DatasetWriter::DatasetWriter(std::string path, int height, int width, int channels, bool with_labels)
    : impl_(std::make_unique<Impl>()) {
  GT_CHECK(height > 0 && width > 0 && channels > 0, "dataset image shape {}x{}x{}", height, width, channels);
  GT_CHECK(!path.empty(), "empty dataset path");
  impl_->path = std::move(path);
  impl_->tmp_path = impl_->path + ".tmp";
  impl_->height = height;
  impl_->width = width;
  impl_->channels = channels;
  impl_->with_labels = with_labels;
  impl_->sample_bytes = static_cast<size_t>(height) * width * channels;
  try {
    impl_->create();
  } catch (...) {
    impl_->close_and_remove();
    throw;
  }
}

DatasetWriter::~DatasetWriter() {
  if (impl_) impl_->close_and_remove();
}

void DatasetWriter::append(const uint8_t* hwc, int64_t label) { append_many(hwc, 1, &label); }

void DatasetWriter::append_many(const uint8_t* nhwc, int64_t count, const int64_t* labels) {
  Impl& w = *impl_;
  GT_CHECK(w.open, "append to dataset {} after finish() or abort()", w.path);
  GT_CHECK(count >= 0, "append of {} images", count);
  for (int64_t done = 0; done < count;) {
    const int64_t take = std::min(count - done, w.buffer_capacity - w.buffered);
    std::memcpy(w.pixel_buffer.data() + static_cast<size_t>(w.buffered) * w.sample_bytes,
                nhwc + static_cast<size_t>(done) * w.sample_bytes, static_cast<size_t>(take) * w.sample_bytes);
    if (w.with_labels) {
      int64_t* dst = w.label_buffer.data() + w.buffered;
      if (labels)
        std::copy(labels + done, labels + done + take, dst);
      else
        std::fill(dst, dst + take, int64_t{0});
    }
    w.buffered += take;
    done += take;
    if (w.buffered == w.buffer_capacity) w.flush();
  }
}

int64_t DatasetWriter::count() const { return impl_->written + impl_->buffered; }

const std::string& DatasetWriter::path() const { return impl_->path; }

void DatasetWriter::finish(const std::string& source) {
  Impl& w = *impl_;
  GT_CHECK(w.open, "finish() of dataset {} twice or after abort()", w.path);
  try {
    if (count() == 0) user_error("dataset {} would hold no images; nothing was written", w.path);
    w.flush();
    const hid_t root = w.file.get();
    write_string_attribute(root, "format", kDatasetFormatName);
    write_int_attribute(root, "format_version", kDatasetFormatVersion);
    write_string_attribute(root, "source", source);
    write_int_attribute(root, "count", w.written);
    write_int_attribute(root, "height", w.height);
    write_int_attribute(root, "width", w.width);
    write_int_attribute(root, "channels", w.channels);
    write_string_attribute(root, "created_by", fmt::format("gantrain {}+{}", version(), git_revision()));
    H5_CHECK(H5Fflush(root, H5F_SCOPE_GLOBAL), "while flushing {}", w.tmp_path);
    w.labels.reset();
    w.images.reset();
    H5_CHECK(w.file.close(), "while closing {}", w.tmp_path);
    fsync_path(w.tmp_path, O_RDONLY, "file");
    if (std::rename(w.tmp_path.c_str(), w.path.c_str()) != 0)
      runtime_error("cannot rename {} to {}: {}", w.tmp_path, w.path, std::strerror(errno));
    w.open = false;
    // Without this the rename itself may not survive a crash.
    fsync_path(directory_of(w.path), O_RDONLY | O_DIRECTORY, "directory");
  } catch (...) {
    w.close_and_remove();
    throw;
  }
}

void DatasetWriter::abort() { impl_->close_and_remove(); }

// ---- reader --------------------------------------------------------------------------------------

namespace {

// The open file and what validation learned about it.
struct OpenDataset {
  DatasetInfo info;
  h5::File file;
  h5::Dataset images, labels;
  std::vector<hsize_t> image_dims, label_dims;
};

h5::File open_dataset_file(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) user_error("dataset file {} does not exist", path);
  if (fs::is_directory(path, ec)) user_error("dataset path {} is a directory, not an .h5 file", path);
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
  if (is_hdf5 == 0) user_error("dataset file {} is not an HDF5 file", path);
  if (is_hdf5 < 0) user_error("cannot read dataset file {}: {}", path, h5::take_error_message());
  h5::PropList fapl = file_access();
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (id < 0) {
    const std::string why = h5::take_error_message();
    if (why.find("lock") != std::string::npos)
      user_error("cannot open dataset file {}: {} (on a shared file system, set HDF5_USE_FILE_LOCKING=FALSE)", path,
                 why);
    user_error("cannot open dataset file {} (truncated or corrupt?): {}", path, why);
  }
  return h5::File(id);
}

h5::Dataset open_member(hid_t file, const char* name, const std::string& path) {
  h5::PropList dapl = uncached_dataset_access();
  const hid_t id = H5Dopen2(file, name, dapl.get());
  if (id < 0) user_error("dataset file {}: /{} is not a readable dataset: {}", path, name, h5::take_error_message());
  return h5::Dataset(id);
}

void validate_images(OpenDataset& r, const std::string& path) {
  if (H5_CHECK(H5Lexists(r.file.get(), kImages, H5P_DEFAULT), "while looking for /images in {}", path) <= 0)
    user_error("dataset file {} has no /images; expected uint8 images [N, H, W, C] (gantrain ingest writes them)",
               path);
  r.images = open_member(r.file.get(), kImages, path);
  h5::Datatype type(H5_CHECK(H5Dget_type(r.images.get()), "while reading the type of /images in {}", path));
  const bool is_uint8 = H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_size(type.get()) == 1 &&
                        H5Tget_sign(type.get()) == H5T_SGN_NONE;
  if (!is_uint8) user_error("dataset file {}: /images holds {}, expected uint8 pixels", path, type_name(type.get()));
  r.image_dims = dims_of(r.images.get());
  if (r.image_dims.size() != 4)
    user_error("dataset file {}: /images has shape {} ({} dimensions), expected 4: [N, H, W, C]", path,
               shape_text(r.image_dims), r.image_dims.size());
  if (r.image_dims[0] == 0) user_error("dataset file {} holds no images (/images is {})", path, shape_text(r.image_dims));
  if (r.image_dims[1] == 0 || r.image_dims[2] == 0 || r.image_dims[3] == 0)
    user_error("dataset file {}: /images has shape {}; images must have non-zero height, width and channels", path,
               shape_text(r.image_dims));
  // Every number below sizes memory (a probe image, the loader's batches): check them all before use.
  const std::vector<hsize_t>& d = r.image_dims;
  if (d[1] > uint64_t(kMaxImagePixels) || d[2] > uint64_t(kMaxImagePixels) / d[1] || d[3] > kMaxChannels)
    user_error("dataset file {}: /images has shape {}; images may have at most {} pixels and {} channels", path,
               shape_text(d), kMaxImagePixels, kMaxChannels);
  const uint64_t sample_bytes = d[1] * d[2] * d[3];  // at most 4e8: no overflow
  h5::PropList dcpl(H5_CHECK(H5Dget_create_plist(r.images.get()), "while reading the layout of /images in {}", path));
  const int filters = H5_CHECK(H5Pget_nfilters(dcpl.get()), "while reading the filters of /images in {}", path);
  hsize_t file_size = 0;
  H5_CHECK(H5Fget_filesize(r.file.get(), &file_size), "while sizing {}", path);
  // Uncompressed pixels are in the file; compressed ones unpack to at most kMaxDeflateRatio times it.
  const uint64_t limit = filters > 0 ? file_size * kMaxDeflateRatio : file_size;
  if (d[0] > limit / sample_bytes)
    user_error("dataset file {}: /images has shape {} ({} x {} bytes), more than its {} bytes{} can hold", path,
               shape_text(d), d[0], sample_bytes, file_size, filters > 0 ? " of compressed data" : "");
  DatasetInfo& info = r.info;
  info.count = static_cast<int64_t>(d[0]);
  info.height = static_cast<int>(d[1]);
  info.width = static_cast<int>(d[2]);
  info.channels = static_cast<int>(d[3]);
  if (H5Pget_layout(dcpl.get()) == H5D_CHUNKED) {
    hsize_t chunk[4] = {0, 0, 0, 0};
    if (H5_CHECK(H5Pget_chunk(dcpl.get(), 4, chunk), "while reading the chunk shape of /images in {}", path) != 4)
      user_error("dataset file {}: /images is chunked with a chunk rank other than its own (4)", path);
    // HDF5 holds a whole chunk in memory to unfilter it: a chunk is one allocation sized by the file.
    const std::vector<hsize_t> chunk_dims(chunk, chunk + 4);
    uint64_t chunk_bytes = 1;
    for (hsize_t c : chunk_dims)
      if (__builtin_mul_overflow(chunk_bytes, c, &chunk_bytes)) chunk_bytes = UINT64_MAX;
    if (chunk_bytes > kMaxChunkBytes || (filters > 0 && chunk_bytes > limit))
      user_error("dataset file {}: /images of shape {} has chunks of shape {} ({} bytes), above the limit of {} bytes",
                 path, shape_text(d), shape_text(chunk_dims), chunk_bytes, std::min(kMaxChunkBytes, limit));
    info.samples_per_chunk = static_cast<int64_t>(chunk[0]);
  }
}

void validate_labels(OpenDataset& r, const std::string& path) {
  if (H5_CHECK(H5Lexists(r.file.get(), kLabels, H5P_DEFAULT), "while looking for /labels in {}", path) <= 0) return;
  r.labels = open_member(r.file.get(), kLabels, path);
  h5::Datatype type(H5_CHECK(H5Dget_type(r.labels.get()), "while reading the type of /labels in {}", path));
  if (H5Tget_class(type.get()) != H5T_INTEGER)
    user_error("dataset file {}: /labels holds {}, expected integers", path, type_name(type.get()));
  r.label_dims = dims_of(r.labels.get());
  if (r.label_dims.size() != 1)
    user_error("dataset file {}: /labels has shape {}, expected one label per image: [N]", path,
               shape_text(r.label_dims));
  if (static_cast<int64_t>(r.label_dims[0]) != r.info.count)
    user_error("dataset file {}: /labels holds {} labels for {} images", path, r.label_dims[0], r.info.count);
  r.info.has_labels = true;
}

void read_attributes(OpenDataset& r, const std::string& path) {
  const hid_t root = r.file.get();
  DatasetInfo& info = r.info;
  if (has_attribute(root, "format")) {
    const std::string format = read_string_attribute(root, "format", path);
    if (format != kDatasetFormatName)
      user_error("dataset file {} says its format is '{}', expected '{}'", path, format, kDatasetFormatName);
  }
  if (has_attribute(root, "format_version")) {
    info.format_version = read_int_attribute(root, "format_version", path);
    if (info.format_version > kDatasetFormatVersion)
      user_error("dataset file {} has format_version {}, newer than this gantrain reads ({}); update gantrain", path,
                 info.format_version, kDatasetFormatVersion);
  }
  if (has_attribute(root, "count")) {
    const int64_t count = read_int_attribute(root, "count", path);
    if (count != info.count)
      user_error("dataset file {}: attribute count says {} images but /images holds {}", path, count, info.count);
  }
  if (has_attribute(root, "source")) info.source = read_string_attribute(root, "source", path);
  if (has_attribute(root, "created_by")) info.created_by = read_string_attribute(root, "created_by", path);
}

}  // namespace

struct DatasetReader::Impl : OpenDataset {};

DatasetReader::DatasetReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DatasetReader::~DatasetReader() = default;
DatasetReader::DatasetReader(DatasetReader&&) noexcept = default;
DatasetReader& DatasetReader::operator=(DatasetReader&&) noexcept = default;

DatasetReader DatasetReader::open(const std::string& path) {
  h5::silence_error_printing();
  auto r = std::make_unique<Impl>();
  r->info.path = path;
  r->file = open_dataset_file(path);
  try {
    validate_images(*r, path);
    validate_labels(*r, path);
    read_attributes(*r, path);
  } catch (const RuntimeError& e) {  // HDF5 failed on the file's metadata: a damaged file, not a bug of ours
    user_error("dataset file {} is corrupt or unreadable: {}", path, e.what());
  }
  // A file cut short after its metadata passes the checks above; reading the first and the last
  // image finds it now, as a user error, instead of as a runtime failure hours into training.
  DatasetReader reader(std::move(r));
  std::vector<uint8_t> probe(reader.info().sample_bytes());
  for (int64_t index : {int64_t{0}, reader.info().count - 1}) {
    try {
      reader.read_range(index, 1, probe.data());
    } catch (const RuntimeError& e) {
      user_error("dataset file {}: image {} cannot be read (truncated or corrupt file?): {}", path, index, e.what());
    }
  }
  return reader;
}

DatasetReader DatasetReader::open_checked(const std::string& path) {
  check_file_or_refuse("dataset", path, &verify_dataset_file, "dataset file " + path);
  return open(path);
}

namespace {

// Looks up every chunk of a chunked dataset in the file's chunk index, as reads would: the index is
// file metadata that HDF5 parses (unchecked in superblock 0 and 1 files, h5py's default) when a read
// first reaches a chunk, possibly hours into training.
void look_up_every_chunk(hid_t dataset, const std::vector<hsize_t>& dims, const char* name, const std::string& path) {
  h5::PropList dcpl(H5_CHECK(H5Dget_create_plist(dataset), "while reading the layout of /{} in {}", name, path));
  if (H5Pget_layout(dcpl.get()) != H5D_CHUNKED) return;
  const int rank = static_cast<int>(dims.size());
  std::vector<hsize_t> chunk(dims.size(), 0);
  if (H5_CHECK(H5Pget_chunk(dcpl.get(), rank, chunk.data()), "while reading the chunk shape of /{} in {}", name,
               path) != rank)
    user_error("dataset file {}: /{} is chunked with a chunk rank other than its own ({})", path, name, rank);
  uint64_t chunks = 1;
  std::vector<hsize_t> grid(dims.size());
  for (size_t d = 0; d < dims.size(); ++d) {
    if (chunk[d] == 0) user_error("dataset file {}: /{} has a chunk dimension of 0", path, name);
    grid[d] = (dims[d] + chunk[d] - 1) / chunk[d];
    if (__builtin_mul_overflow(chunks, grid[d], &chunks)) chunks = UINT64_MAX;
  }
  if (chunks > kMaxCheckedChunks)
    user_error("dataset file {}: /{} of shape {} is cut into {} chunks of shape {}, more than the {} gantrain "
               "checks; ingest the images again (gantrain ingest writes a few images per chunk)",
               path, name, shape_text(dims), chunks, shape_text(chunk), kMaxCheckedChunks);
  std::vector<hsize_t> at(dims.size(), 0), offset(dims.size(), 0);
  for (uint64_t i = 0; i < chunks; ++i) {
    for (size_t d = 0; d < dims.size(); ++d) offset[d] = at[d] * chunk[d];
    unsigned filter_mask = 0;
    haddr_t address = 0;
    hsize_t bytes = 0;
    H5_CHECK(H5Dget_chunk_info_by_coord(dataset, offset.data(), &filter_mask, &address, &bytes),
             "while looking up chunk {} of /{} in {}", shape_text(offset), name, path);
    for (size_t d = dims.size(); d-- > 0;) {  // the next chunk in row-major order
      if (++at[d] < grid[d]) break;
      at[d] = 0;
    }
  }
}

}  // namespace

std::string verify_dataset_file(const std::string& path) {
  DatasetReader reader = DatasetReader::open(path);
  const DatasetReader::Impl& r = *reader.impl_;
  try {
    look_up_every_chunk(r.images.get(), r.image_dims, kImages, path);
    if (r.info.has_labels) look_up_every_chunk(r.labels.get(), r.label_dims, kLabels, path);
    if (r.info.has_labels) {  // the first and the last label, as open() does for the images
      int64_t labels[2];
      const int64_t ends[2] = {0, r.info.count - 1};
      reader.read_labels(ends, labels);
    }
  } catch (const RuntimeError& e) {
    user_error("dataset file {} is corrupt or unreadable: {}", path, e.what());
  }
  return r.info.describe();
}

const DatasetInfo& DatasetReader::info() const { return impl_->info; }

void DatasetReader::read_range(int64_t first, int64_t count, uint8_t* out) const {
  const Impl& r = *impl_;
  GT_CHECK(first >= 0 && count >= 0 && first + count <= r.info.count, "images {}..{} of a dataset of {}", first,
           first + count, r.info.count);
  if (count == 0) return;
  h5::silence_error_printing();  // per thread in thread-safe HDF5 builds, and loaders read on their own thread
  RowReader(r.images.get(), H5T_NATIVE_UINT8, r.image_dims, r.info.path).read(first, count, out);
}

void DatasetReader::read_images(std::span<const int64_t> indices, uint8_t* out) const {
  const Impl& r = *impl_;
  for (int64_t i : indices) GT_CHECK(i >= 0 && i < r.info.count, "image index {} of a dataset of {}", i, r.info.count);
  h5::silence_error_printing();
  RowReader rows(r.images.get(), H5T_NATIVE_UINT8, r.image_dims, r.info.path);
  gather_rows(indices, r.info.sample_bytes(), out,
              [&](int64_t first, int64_t count, uint8_t* dst) { rows.read(first, count, dst); });
}

void DatasetReader::read_labels(std::span<const int64_t> indices, int64_t* out) const {
  const Impl& r = *impl_;
  GT_CHECK(r.info.has_labels, "read_labels on dataset {} without labels", r.info.path);
  for (int64_t i : indices) GT_CHECK(i >= 0 && i < r.info.count, "label index {} of a dataset of {}", i, r.info.count);
  h5::silence_error_printing();
  RowReader rows(r.labels.get(), H5T_NATIVE_INT64, r.label_dims, r.info.path);
  gather_rows(indices, sizeof(int64_t), reinterpret_cast<uint8_t*>(out),
              [&](int64_t first, int64_t count, uint8_t* dst) { rows.read(first, count, dst); });
}

void check_dataset_fits_model(const DatasetInfo& info, int channels, int resolution) {
  if (info.height != resolution || info.width != resolution)
    user_error("dataset {} holds {}x{} images but model.resolution is {}; re-ingest with `gantrain ingest --size {}` "
               "or set model.resolution to match",
               info.path, info.height, info.width, resolution, resolution);
  if (info.channels == channels) return;
  if (info.channels == 1 && channels == 3) return;  // gray repeated over R, G and B
  if (info.channels == 3)
    user_error("dataset {} holds 3-channel (RGB) images but model.channels is {}; set model.channels=3", info.path,
               channels);
  user_error("dataset {} holds {}-channel images but model.channels is {}; re-ingest the images as gray (1 channel) "
             "or RGB (3 channels)",
             info.path, info.channels, channels);
}

}  // namespace gt
