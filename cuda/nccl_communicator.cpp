// The NCCL communicator: unique id over the bootstrap communicator, non-blocking NCCL with polled waits and a deadline, abort on failure.
#include "cuda/nccl_communicator.h"

#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <thread>

#include "cuda/check.h"
#include "core/error.h"
#include "cuda/device.h"
#include "parallel/agreement.h"
#include "parallel/device_map.h"
#include "parallel/gpu_placement.h"
#include "parallel/launch.h"

namespace gt::cuda {
namespace {

ncclDataType_t nccl_type(ElemType t) {
  switch (t) {
    case ElemType::f32: return ncclFloat32;
    case ElemType::f64: return ncclFloat64;
    case ElemType::i64: return ncclInt64;
    case ElemType::u8: return ncclUint8;
    case ElemType::bf16: return ncclBfloat16;
  }
  GT_CHECK(false, "no NCCL type for element type {}", static_cast<int>(t));
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::avg: return ncclAvg;
    case ReduceOp::max: return ncclMax;
    case ReduceOp::min: return ncclMin;
  }
  GT_CHECK(false, "no NCCL reduction for op {}", static_cast<int>(op));
}

// NCCL_VERSION(X, Y, Z) = X * 10000 + Y * 100 + Z since NCCL 2.9.
std::string version_text(int code) { return fmt::format("{}.{}.{}", code / 10000, code / 100 % 100, code % 100); }

// The waiting rhythm of the MPI communicator: a short spin (latency matters), then yields, then short
// sleeps, so that ranks sharing cores give each other the CPU.
class Poller {
 public:
  double waited() const { return std::chrono::duration<double>(clock::now() - start_).count(); }
  void pause() {
    if (++polls_ < 2000) return;
    const double w = waited();
    if (w > 0.002) std::this_thread::sleep_for(std::chrono::microseconds(w > 0.1 ? 500 : 20));
    else std::this_thread::yield();
  }

 private:
  using clock = std::chrono::steady_clock;
  clock::time_point start_ = clock::now();
  int64_t polls_ = 0;
};

class NcclCommunicatorImpl;

class NcclPending final : public StreamCollective {
 public:
  NcclPending(NcclCommunicatorImpl* owner, cudaEvent_t done, const char* what) : owner_(owner), done_(done), what_(what) {}
  ~NcclPending() override { cudaEventDestroy(done_); }  // legal before completion: CUDA frees it afterwards
  NcclPending(const NcclPending&) = delete;
  NcclPending& operator=(const NcclPending&) = delete;

  bool test() override;
  void wait() override;
  bool order_before_device_work() override;
  cudaEvent_t done_event() const override { return done_; }

 private:
  NcclCommunicatorImpl* owner_;
  cudaEvent_t done_;
  const char* what_;
  bool complete_ = false;
};

class NcclCommunicatorImpl final : public NcclCommunicator {
 public:
  NcclCommunicatorImpl(std::unique_ptr<Communicator> bootstrap, double timeout_s)
      : boot_(std::move(bootstrap)), timeout_s_(timeout_s) {
    GT_CHECK(boot_ != nullptr, "the NCCL communicator needs a bootstrap communicator");
  }

  // Construction in two steps so that a failure half-way runs the destructor, which releases what exists.
  // Every step that can fail on one rank alone is agreed, so all ranks stop together, reported once.
  void open() {
    int gpus = 0;
    run_agreed(*boot_, [&] { gpus = count_usable_gpus(); });
    RankDeviceView mine;
    mine.host = boot_->host();
    mine.process.local_rank = boot_->local_rank();
    mine.process.device_count = gpus;
    mine.process.visible = cuda_visible_devices(process_env());
    const std::vector<DeviceAssignment> placed = gather_and_place(*boot_, mine, /*exclusive=*/true);
    ncclUniqueId id{};
    run_agreed(*boot_, [&] {
      use_device(placed[static_cast<size_t>(rank())].ordinal);
      create_stream_and_events();
      if (rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    });
    boot_->broadcast(reinterpret_cast<uint8_t*>(&id), static_cast<int64_t>(sizeof(id)), 0);
    run_agreed(*boot_, [&] { init_nccl(id); });
  }

  ~NcclCommunicatorImpl() override {
    // Unwinding (this rank failed): peers may never reach a finalize, so do not wait for them.
    if (std::uncaught_exceptions() > 0) abort_nccl();
    else finalize_or_abort();
    if (scratch_) cudaFree(scratch_);
    if (ready_) cudaEventDestroy(ready_);
    if (done_) cudaEventDestroy(done_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::string backend() const override { return "nccl"; }
  int rank() const override { return boot_->rank(); }
  int world_size() const override { return boot_->world_size(); }
  int local_rank() const override { return boot_->local_rank(); }
  int local_size() const override { return boot_->local_size(); }
  std::string host() const override { return boot_->host(); }
  void set_timeout(double seconds) override {
    timeout_s_ = seconds;
    boot_->set_timeout(seconds);
  }
  int device() const override { return device_; }
  cudaStream_t stream() const override { return stream_; }
  void set_compute_stream(cudaStream_t stream) override { compute_ = stream; }
  cudaStream_t compute_stream() const { return compute_; }
  bool orders_on_device() const override { return true; }
  void wait_event(cudaEvent_t event, const char* what) override { wait_done(event, what); }

  std::string describe() const override {
    return fmt::format("NCCL {} (headers {}) | {} rank{} | rank {} on GPU {} ({}) of {}, local rank {} of {}",
                       nccl_library_version(), version_text(NCCL_VERSION_CODE), world_size(),
                       world_size() == 1 ? "" : "s", rank(), device_, gpu_name_, host(), local_rank(), local_size());
  }

  void all_reduce_bytes(const void* send, void* recv, int64_t count, ElemType t, ReduceOp op) override {
    if (!start_reduce(send, recv, count, t, op)) return;
    CUDA_CHECK(cudaEventRecord(done_, stream_));
    wait_done(done_, "all-reduce");
  }

  std::unique_ptr<PendingCollective> start_all_reduce_bytes(const void* send, void* recv, int64_t count, ElemType t,
                                                            ReduceOp op) override {
    cudaEvent_t done = nullptr;
    CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    auto pending = std::make_unique<NcclPending>(this, done, "all-reduce");
    start_reduce(send, recv, count, t, op);
    CUDA_CHECK(cudaEventRecord(done, stream_));  // after nothing, when count is 0: completes at once
    return pending;
  }

  void all_gather_bytes(const void* send, void* recv, int64_t count, ElemType t) override {
    GT_CHECK(count >= 0, "negative element count {}", count);
    if (count == 0) return;
    require_device_buffer(send, "all-gather");
    require_device_buffer(recv, "all-gather");
    enqueue("all-gather", [&] {
      return ncclAllGather(send, recv, static_cast<size_t>(count), nccl_type(t), comm_, stream_);
    });
    CUDA_CHECK(cudaEventRecord(done_, stream_));
    wait_done(done_, "all-gather");
  }

  void broadcast_bytes(void* data, int64_t count, ElemType t, int root) override {
    GT_CHECK(root >= 0 && root < world_size(), "broadcast from rank {} in a world of {}", root, world_size());
    GT_CHECK(count >= 0, "negative element count {}", count);
    if (count == 0) return;
    require_device_buffer(data, "broadcast");
    enqueue("broadcast", [&] {
      return ncclBroadcast(data, data, static_cast<size_t>(count), nccl_type(t), root, comm_, stream_);
    });
    CUDA_CHECK(cudaEventRecord(done_, stream_));
    wait_done(done_, "broadcast");
  }

  // A one-float all-reduce: returns when every rank has reached it.
  void barrier() override {
    enqueue("barrier", [&] { return ncclAllReduce(scratch_, scratch_, 1, ncclFloat32, ncclSum, comm_, stream_); });
    CUDA_CHECK(cudaEventRecord(done_, stream_));
    wait_done(done_, "barrier");
  }

  [[noreturn]] void abort(int exit_code) override {
    std::fflush(nullptr);
    abort_nccl();  // so that kernels waiting for peers stop
    boot_->abort(exit_code);
    std::_Exit(exit_code);  // not reached: a virtual call does not carry [[noreturn]] for the compiler
  }

  // One poll of a queued collective: true once complete; throws on a CUDA or NCCL error.
  bool poll_once(cudaEvent_t done, const char* what) {
    const cudaError_t e = cudaEventQuery(done);
    if (e == cudaSuccess) return true;
    if (e != cudaErrorNotReady) {
      abort_nccl();
      CUDA_CHECK(e);
    }
    check_async_error(what);
    return false;
  }

  void wait_done(cudaEvent_t done, const char* what) {
    for (Poller poll; !poll_once(done, what); poll.pause()) check_deadline(poll, what);
  }

 private:
  int count_usable_gpus() const {
    const DeviceReport report = query_devices();
    if (report.count == 0)
      user_error("dist.backend is nccl, but {} has no usable GPU ({})", boot_->host(), report.reason);
    return report.count;
  }

  void use_device(int ordinal) {
    device_ = ordinal;
    CUDA_CHECK(cudaSetDevice(device_));
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
    gpu_name_ = prop.name;
  }

  void create_stream_and_events() {
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    CUDA_CHECK(cudaMalloc(&scratch_, sizeof(float)));
    CUDA_CHECK(cudaMemset(scratch_, 0, sizeof(float)));
  }

  void init_nccl(const ncclUniqueId& id) {
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // every call returns at once; the waits below poll, with the deadline
    ncclComm_t comm = nullptr;
    const ncclResult_t r = ncclCommInitRankConfig(&comm, world_size(), id, rank(), &config);
    comm_ = comm;
    if (r == ncclInProgress) wait_enqueued("initialization");
    else if (r != ncclSuccess) fail(r, "initialization");
  }

  // Checks the arguments and queues the reduction; false when there is nothing to reduce.
  bool start_reduce(const void* send, void* recv, int64_t count, ElemType t, ReduceOp op) {
    GT_CHECK(count >= 0, "negative element count {}", count);
    GT_CHECK(op != ReduceOp::avg || t == ElemType::f32 || t == ElemType::f64, "avg of {} values is not defined",
             elem_type_name(t));
    if (count == 0) return false;
    require_device_buffer(send, "all-reduce");
    require_device_buffer(recv, "all-reduce");
    enqueue("all-reduce", [&] {
      return ncclAllReduce(send, recv, static_cast<size_t>(count), nccl_type(t), nccl_op(op), comm_, stream_);
    });
    return true;
  }

  // Queues a collective on stream_ after the work already on the compute stream.
  template <class Launch>
  void enqueue(const char* what, Launch launch) {
    if (!comm_) runtime_error("NCCL {}: the communicator was aborted after an earlier failure", what);
    CUDA_CHECK(cudaEventRecord(ready_, compute_));
    CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
    const ncclResult_t r = launch();
    // A non-blocking communicator may finish queueing in the background; the stream holds the work after.
    if (r == ncclInProgress) wait_enqueued(what);
    else if (r != ncclSuccess) fail(r, what);
  }

  void require_device_buffer(const void* p, const char* what) const {
    cudaPointerAttributes a{};
    const cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e != cudaSuccess) cudaGetLastError();  // not sticky; the check below reports it
    GT_CHECK(e == cudaSuccess && (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged),
             "the NCCL communicator's {} takes device buffers; {} is not device memory", what, p);
    GT_CHECK(a.type == cudaMemoryTypeManaged || a.device == device_,
             "the NCCL communicator's {} got memory of GPU {}, but this rank uses GPU {}", what, a.device, device_);
  }

  // Waits for NCCL's state to leave ncclInProgress (initialization, a call queueing in the background).
  void wait_enqueued(const char* what) {
    for (Poller poll;; poll.pause()) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
      if (r != ncclSuccess) fail(r, what);
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) fail(state, what);
      check_deadline(poll, what);
    }
  }

  void check_async_error(const char* what) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
    if (r != ncclSuccess) fail(r, what);
    if (state != ncclSuccess && state != ncclInProgress) fail(state, what);
  }

  void check_deadline(const Poller& poll, const char* what) {
    if (timeout_s_ <= 0 || poll.waited() <= timeout_s_) return;
    abort_nccl();  // NCCL's kernels and threads stop waiting for the missing peer
    runtime_error("NCCL {} did not complete within dist.timeout_s = {} s: another rank is stuck, much slower, or gone "
                  "(NCCL communicator aborted)",
                  what, timeout_s_);
  }

  [[noreturn]] void fail(ncclResult_t r, const char* what) {
    const char* last = comm_ ? ncclGetLastError(comm_) : nullptr;
    const std::string detail = last ? last : "";
    abort_nccl();
    runtime_error("NCCL {} failed: {} ({}){}{}", what, ncclGetErrorString(r), static_cast<int>(r),
                  detail.empty() ? "" : ": ", detail);
  }

  void abort_nccl() noexcept {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
  }

  // A clean end: flush this rank's operations (waiting at most the timeout), then free; abort otherwise.
  void finalize_or_abort() noexcept {
    if (!comm_) return;
    ncclResult_t state = ncclCommFinalize(comm_);
    for (Poller poll; state == ncclInProgress; poll.pause()) {
      if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess) break;
      if (timeout_s_ > 0 && poll.waited() > timeout_s_) break;
    }
    if (state == ncclSuccess) {
      ncclCommDestroy(comm_);
      comm_ = nullptr;
    }
    abort_nccl();
  }

  std::unique_ptr<Communicator> boot_;
  double timeout_s_;
  int device_ = 0;
  std::string gpu_name_;
  cudaStream_t stream_ = nullptr;
  cudaStream_t compute_ = nullptr;  // the default stream until set
  cudaEvent_t ready_ = nullptr;     // recorded on the compute stream before each collective
  cudaEvent_t done_ = nullptr;      // recorded after each blocking collective
  float* scratch_ = nullptr;        // the barrier's one float
  ncclComm_t comm_ = nullptr;
};

bool NcclPending::test() {
  if (!complete_) complete_ = owner_->poll_once(done_, what_);
  return complete_;
}

void NcclPending::wait() {
  if (complete_) return;
  owner_->wait_done(done_, what_);
  complete_ = true;
}

// The stream waits for the event as recorded now; destroying the event afterwards (this handle's end) is legal.
bool NcclPending::order_before_device_work() {
  if (!complete_) CUDA_CHECK(cudaStreamWaitEvent(owner_->compute_stream(), done_, 0));
  return true;
}

}  // namespace

std::string nccl_library_version() {
  int code = 0;
  NCCL_CHECK(ncclGetVersion(&code));
  return version_text(code);
}

std::unique_ptr<NcclCommunicator> make_nccl_communicator(std::unique_ptr<Communicator> bootstrap, double timeout_s) {
  auto comm = std::make_unique<NcclCommunicatorImpl>(std::move(bootstrap), timeout_s);
  comm->open();
  return comm;
}

}  // namespace gt::cuda
