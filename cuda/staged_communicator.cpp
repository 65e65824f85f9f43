// A host communicator over device buffers: device -> pinned host -> collective -> device, with pinned buffers reused between calls.
#include "cuda/staged_communicator.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <utility>
#include <vector>

#include "cuda/check.h"
#include "core/error.h"

namespace gt::cuda {
namespace {

// One cudaMallocHost allocation, move-only.
class PinnedBuffer {
 public:
  explicit PinnedBuffer(size_t bytes) : bytes_(bytes) { CUDA_CHECK(cudaMallocHost(&data_, bytes)); }
  ~PinnedBuffer() {
    if (data_) cudaFreeHost(data_);
  }
  PinnedBuffer(PinnedBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  // Gives up ownership without freeing: memory an unfinished collective may still write into.
  void leak() { data_ = nullptr; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Free pinned buffers kept for the next call: the smallest one that fits is reused.
class PinnedPool {
 public:
  PinnedBuffer take(size_t bytes) {
    size_t best = free_.size();
    for (size_t i = 0; i < free_.size(); ++i)
      if (free_[i].bytes() >= bytes && (best == free_.size() || free_[i].bytes() < free_[best].bytes())) best = i;
    if (best == free_.size()) return PinnedBuffer(round_up(bytes));
    PinnedBuffer b = std::move(free_[best]);
    free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(best));
    return b;
  }
  void give_back(PinnedBuffer b) {
    if (b.data()) free_.push_back(std::move(b));
  }

 private:
  static size_t round_up(size_t bytes) {
    constexpr size_t kGrain = size_t{64} << 10;
    return (std::max<size_t>(bytes, 1) + kGrain - 1) / kGrain * kGrain;
  }
  std::vector<PinnedBuffer> free_;
};

// A buffer of the pool for the duration of one call; back to the pool at the end, even on an exception.
class Lease {
 public:
  Lease(PinnedPool& pool, size_t bytes) : pool_(&pool), buffer_(pool.take(bytes)) {}
  ~Lease() {
    if (pool_) pool_->give_back(std::move(buffer_));
  }
  Lease(Lease&& o) noexcept : pool_(std::exchange(o.pool_, nullptr)), buffer_(std::move(o.buffer_)) {}
  Lease& operator=(Lease&&) = delete;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  void* data() const { return buffer_.data(); }
  void leak() {
    buffer_.leak();
    pool_ = nullptr;
  }

 private:
  PinnedPool* pool_;
  PinnedBuffer buffer_;
};

// Copies on stream and waits for it: the copy is ordered after the work that produced src.
void copy_and_wait(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

class StagedPending final : public PendingCollective {
 public:
  StagedPending(std::unique_ptr<PendingCollective> host, Lease in, Lease out, void* recv, size_t bytes,
                cudaStream_t stream)
      : host_(std::move(host)), in_(std::move(in)), out_(std::move(out)), recv_(recv), bytes_(bytes), stream_(stream) {}
  ~StagedPending() override {
    if (complete_) return;
    // The host collective may still write into these: leak them rather than hand them to another call.
    in_.leak();
    out_.leak();
  }

  bool test() override {
    if (!complete_ && host_->test()) finish();
    return complete_;
  }
  void wait() override {
    if (complete_) return;
    host_->wait();
    finish();
  }

 private:
  void finish() {
    copy_and_wait(recv_, out_.data(), bytes_, stream_);
    complete_ = true;
  }

  std::unique_ptr<PendingCollective> host_;
  Lease in_, out_;
  void* recv_;
  size_t bytes_;
  cudaStream_t stream_;
  bool complete_ = false;
};

class HostStagedCommunicator final : public Communicator {
 public:
  HostStagedCommunicator(std::unique_ptr<Communicator> host, cudaStream_t stream)
      : host_(std::move(host)), stream_(stream) {
    GT_CHECK(host_ != nullptr, "the staged communicator needs a host communicator");
  }

  std::string backend() const override { return host_->backend(); }
  int rank() const override { return host_->rank(); }
  int world_size() const override { return host_->world_size(); }
  int local_rank() const override { return host_->local_rank(); }
  int local_size() const override { return host_->local_size(); }
  std::string host() const override { return host_->host(); }
  void set_timeout(double seconds) override { host_->set_timeout(seconds); }

  void all_reduce_bytes(const void* send, void* recv, int64_t count, ElemType t, ReduceOp op) override {
    const size_t bytes = byte_count(count, t);
    Lease in(pool_, bytes), out(pool_, bytes);
    copy_and_wait(in.data(), send, bytes, stream_);
    host_->all_reduce_bytes(in.data(), out.data(), count, t, op);
    copy_and_wait(recv, out.data(), bytes, stream_);
  }

  std::unique_ptr<PendingCollective> start_all_reduce_bytes(const void* send, void* recv, int64_t count, ElemType t,
                                                            ReduceOp op) override {
    const size_t bytes = byte_count(count, t);
    Lease in(pool_, bytes), out(pool_, bytes);
    copy_and_wait(in.data(), send, bytes, stream_);
    std::unique_ptr<PendingCollective> host = host_->start_all_reduce_bytes(in.data(), out.data(), count, t, op);
    return std::make_unique<StagedPending>(std::move(host), std::move(in), std::move(out), recv, bytes, stream_);
  }

  void all_gather_bytes(const void* send, void* recv, int64_t count, ElemType t) override {
    const size_t bytes = byte_count(count, t);
    const size_t all_bytes = bytes * static_cast<size_t>(world_size());
    Lease in(pool_, bytes), out(pool_, all_bytes);
    copy_and_wait(in.data(), send, bytes, stream_);
    host_->all_gather_bytes(in.data(), out.data(), count, t);
    copy_and_wait(recv, out.data(), all_bytes, stream_);
  }

  void broadcast_bytes(void* data, int64_t count, ElemType t, int root) override {
    const size_t bytes = byte_count(count, t);
    Lease buf(pool_, bytes);
    if (rank() == root) copy_and_wait(buf.data(), data, bytes, stream_);
    host_->broadcast_bytes(buf.data(), count, t, root);
    if (rank() != root) copy_and_wait(data, buf.data(), bytes, stream_);
  }

  void barrier() override { host_->barrier(); }
  [[noreturn]] void abort(int exit_code) override {
    host_->abort(exit_code);
    std::_Exit(exit_code);  // not reached: a virtual call does not carry [[noreturn]] for the compiler
  }

 private:
  static size_t byte_count(int64_t count, ElemType t) {
    GT_CHECK(count >= 0, "negative element count {}", count);
    return static_cast<size_t>(count) * elem_size(t);
  }

  std::unique_ptr<Communicator> host_;
  cudaStream_t stream_;
  PinnedPool pool_;
};

}  // namespace

std::unique_ptr<Communicator> make_host_staged_communicator(std::unique_ptr<Communicator> host_comm,
                                                            cudaStream_t stream) {
  return std::make_unique<HostStagedCommunicator>(std::move(host_comm), stream);
}

}  // namespace gt::cuda
