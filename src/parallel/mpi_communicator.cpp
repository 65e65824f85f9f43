// The MPI communicator (host buffers): non-blocking collectives completed by a polling wait with a timeout, so a lost rank never hangs the job.
#if GANTRAIN_HAVE_MPI
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <thread>
#include <vector>

#include "core/bf16.h"
#include "core/error.h"
#include "parallel/communicator.h"
#include "parallel/launch.h"

// GT_MPI_CHECK(call): an MPI error becomes a RuntimeError naming the call, file:line and MPI's own message.
#define GT_MPI_CHECK(call)                                                                          \
  do {                                                                                              \
    const int gt_mpi_rc_ = (call);                                                                  \
    if (gt_mpi_rc_ != MPI_SUCCESS) ::gt::mpi_failed(#call, __FILE__, __LINE__, gt_mpi_rc_);         \
  } while (0)

namespace gt {
namespace {

[[noreturn]] void mpi_failed(const char* call, const char* file, int line, int rc) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  MPI_Error_string(rc, text, &len);
  runtime_error("MPI error in {} ({}:{}): {}", call, file, line, std::string(text, static_cast<size_t>(len)));
}

// MPI counts are int: longer buffers go out in pieces of this many elements.
constexpr int64_t kMaxChunk = int64_t{1} << 30;
// In-place all-reduces from this size on run out of place from a copy: Open MPI's non-blocking
// all-reduce (libnbc) falls back to reduce + broadcast for in-place buffers, 2-3x slower than its ring.
constexpr int64_t kStageInPlaceBytes = 64 << 10;

MPI_Datatype mpi_type(ElemType t) {
  switch (t) {
    case ElemType::f32: return MPI_FLOAT;
    case ElemType::f64: return MPI_DOUBLE;
    case ElemType::i64: return MPI_INT64_T;
    case ElemType::u8: return MPI_UINT8_T;
    case ElemType::bf16: return MPI_UINT16_T;  // summed by bf16_sum_op()
  }
  return MPI_DATATYPE_NULL;
}

// The sum of bfloat16 bit patterns: each addition in float, rounded to bf16 (NCCL's ncclBfloat16 sum).
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const uint16_t* a = static_cast<const uint16_t*>(in);
  uint16_t* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = float_to_bf16_bits(bf16_bits_to_float(a[i]) + bf16_bits_to_float(b[i]));
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg: return MPI_SUM;  // avg divides after the sum
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
  }
  return MPI_OP_NULL;
}

void divide(void* data, int64_t count, ElemType t, int world) {
  if (t == ElemType::f32) {
    float* p = static_cast<float*>(data);
    const float inv = 1.f / static_cast<float>(world);
    for (int64_t i = 0; i < count; ++i) p[i] *= inv;
  } else {
    double* p = static_cast<double*>(data);
    const double inv = 1.0 / world;
    for (int64_t i = 0; i < count; ++i) p[i] *= inv;
  }
}

// Waits for requests by polling: a short spin (the common case, latency matters), then short sleeps
// so that ranks sharing cores with slower ranks give them the CPU, and an error after timeout_s.
void wait_all(std::vector<MPI_Request>& reqs, double timeout_s, const char* what) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  for (int64_t polls = 0;; ++polls) {
    int done = 0;
    GT_MPI_CHECK(MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &done, MPI_STATUSES_IGNORE));
    if (done) return;
    if (polls < 2000) continue;
    const double waited = std::chrono::duration<double>(clock::now() - start).count();
    if (timeout_s > 0 && waited > timeout_s)
      runtime_error("{} did not complete within dist.timeout_s = {} s: another rank is stuck, much slower, or gone",
                    what, timeout_s);
    if (waited > 0.002) std::this_thread::sleep_for(std::chrono::microseconds(waited > 0.1 ? 500 : 20));
    else std::this_thread::yield();
  }
}

// Requests in flight, with the staging copy of an in-place input they read from.
struct Started {
  std::vector<MPI_Request> reqs;
  std::vector<char> staging;
};

class MpiPending final : public PendingCollective {
 public:
  MpiPending(Started started, void* data, int64_t count, ElemType t, ReduceOp op, int world, double timeout_s,
             const char* what)
      : reqs_(std::move(started.reqs)), staging_(std::move(started.staging)), data_(data), count_(count), type_(t),
        op_(op), world_(world), timeout_s_(timeout_s), what_(what) {}

  bool test() override {
    if (done_) return true;
    int flag = 0;
    GT_MPI_CHECK(MPI_Testall(static_cast<int>(reqs_.size()), reqs_.data(), &flag, MPI_STATUSES_IGNORE));
    if (flag) complete();
    return done_;
  }
  void wait() override {
    if (done_) return;
    wait_all(reqs_, timeout_s_, what_);
    complete();
  }

 private:
  void complete() {
    if (op_ == ReduceOp::avg) divide(data_, count_, type_, world_);
    done_ = true;
  }

  std::vector<MPI_Request> reqs_;
  std::vector<char> staging_;
  void* data_;
  int64_t count_;
  ElemType type_;
  ReduceOp op_;
  int world_;
  double timeout_s_;
  const char* what_;
  bool done_ = false;
};

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(double timeout_s) : timeout_s_(timeout_s), host_(host_name()) {
    GT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
    GT_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    GT_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    GT_MPI_CHECK(MPI_Comm_size(comm_, &size_));
    // The ranks sharing this node's memory: the local rank that picks a GPU and sizes thread pools.
    MPI_Comm node;
    GT_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
    GT_MPI_CHECK(MPI_Comm_rank(node, &local_rank_));
    GT_MPI_CHECK(MPI_Comm_size(node, &local_size_));
    MPI_Comm_free(&node);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    MPI_Comm_free(&comm_);
    if (bf16_sum_ != MPI_OP_NULL) MPI_Op_free(&bf16_sum_);
  }

  std::string backend() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  std::string host() const override { return host_; }
  void set_timeout(double seconds) override { timeout_s_ = seconds; }

  void all_reduce_bytes(const void* send, void* recv, int64_t count, ElemType t, ReduceOp op) override {
    // Blocking: the staging copy can live in a buffer kept between calls (no fresh pages each time).
    Started started = start_reduce(send, recv, count, t, op, &blocking_staging_);
    wait_all(started.reqs, timeout_s_, "all-reduce");
    if (op == ReduceOp::avg) divide(recv, count, t, size_);
  }

  std::unique_ptr<PendingCollective> start_all_reduce_bytes(const void* send, void* recv, int64_t count, ElemType t,
                                                            ReduceOp op) override {
    return std::make_unique<MpiPending>(start_reduce(send, recv, count, t, op, nullptr), recv, count, t, op, size_,
                                        timeout_s_, "all-reduce");
  }

  void all_gather_bytes(const void* send, void* recv, int64_t count, ElemType t) override {
    GT_CHECK(count >= 0 && count <= INT_MAX, "all-gather of {} elements per rank: at most {}", count, INT_MAX);
    std::vector<MPI_Request> reqs(1);
    GT_MPI_CHECK(MPI_Iallgather(send, static_cast<int>(count), mpi_type(t), recv, static_cast<int>(count),
                                mpi_type(t), comm_, reqs.data()));
    wait_all(reqs, timeout_s_, "all-gather");
  }

  void broadcast_bytes(void* data, int64_t count, ElemType t, int root) override {
    GT_CHECK(root >= 0 && root < size_, "broadcast from rank {} in a world of {}", root, size_);
    std::vector<MPI_Request> reqs;
    char* p = static_cast<char*>(data);
    for (int64_t off = 0; off < count; off += kMaxChunk) {
      const int n = static_cast<int>(std::min(kMaxChunk, count - off));
      reqs.emplace_back();
      GT_MPI_CHECK(MPI_Ibcast(p + off * static_cast<int64_t>(elem_size(t)), n, mpi_type(t), root, comm_,
                              &reqs.back()));
    }
    wait_all(reqs, timeout_s_, "broadcast");
  }

  void barrier() override {
    std::vector<MPI_Request> reqs(1);
    GT_MPI_CHECK(MPI_Ibarrier(comm_, reqs.data()));
    wait_all(reqs, timeout_s_, "barrier");
  }

  [[noreturn]] void abort(int exit_code) override {
    std::fflush(nullptr);
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }

 private:
  // staging: where an in-place input is copied (nullptr: a buffer owned by the returned Started).
  Started start_reduce(const void* send, void* recv, int64_t count, ElemType t, ReduceOp op,
                       std::vector<char>* staging) {
    check_reduce_args(count, t, op);
    const MPI_Op mop = t == ElemType::bf16 ? bf16_sum_op() : mpi_op(op);
    Started started;
    const int64_t esize = static_cast<int64_t>(elem_size(t));
    bool in_place = send == recv;
    if (in_place && count * esize >= kStageInPlaceBytes) {
      std::vector<char>& copy = staging ? *staging : started.staging;
      if (copy.size() < static_cast<size_t>(count * esize)) copy.resize(static_cast<size_t>(count * esize));
      std::memcpy(copy.data(), recv, static_cast<size_t>(count * esize));
      send = copy.data();
      in_place = false;
    }
    for (int64_t off = 0; off < count; off += kMaxChunk) {
      const int n = static_cast<int>(std::min(kMaxChunk, count - off));
      char* out = static_cast<char*>(recv) + off * esize;
      const void* in = in_place ? MPI_IN_PLACE : static_cast<const char*>(send) + off * esize;
      started.reqs.emplace_back();
      GT_MPI_CHECK(MPI_Iallreduce(in, out, n, mpi_type(t), mop, comm_, &started.reqs.back()));
    }
    return started;
  }

  // The bf16 sum, made on first use.
  MPI_Op bf16_sum_op() {
    if (bf16_sum_ == MPI_OP_NULL) GT_MPI_CHECK(MPI_Op_create(&bf16_sum, /*commute=*/1, &bf16_sum_));
    return bf16_sum_;
  }

  double timeout_s_;
  std::string host_;
  std::vector<char> blocking_staging_;
  MPI_Op bf16_sum_ = MPI_OP_NULL;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(double timeout_s) {
  return std::make_unique<MpiCommunicator>(timeout_s);
}

}  // namespace gt
#endif  // GANTRAIN_HAVE_MPI
