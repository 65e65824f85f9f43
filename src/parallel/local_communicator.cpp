// The world-size-1 communicator (what a process started without an MPI launcher uses, so one code path serves both), and a borrowed one.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

#include "core/error.h"
#include "parallel/communicator.h"
#include "parallel/launch.h"

namespace gt {

size_t elem_size(ElemType t) {
  switch (t) {
    case ElemType::f32: return 4;
    case ElemType::f64: return 8;
    case ElemType::i64: return 8;
    case ElemType::u8: return 1;
    case ElemType::bf16: return 2;
  }
  return 0;
}

const char* elem_type_name(ElemType t) {
  switch (t) {
    case ElemType::f32: return "float";
    case ElemType::f64: return "double";
    case ElemType::i64: return "int64";
    case ElemType::u8: return "uint8";
    case ElemType::bf16: return "bfloat16";
  }
  return "?";
}

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return "sum";
    case ReduceOp::avg: return "avg";
    case ReduceOp::max: return "max";
    case ReduceOp::min: return "min";
  }
  return "?";
}

void check_reduce_args(int64_t count, ElemType t, ReduceOp op) {
  GT_CHECK(count >= 0, "negative element count {}", count);
  GT_CHECK(op != ReduceOp::avg || t == ElemType::f32 || t == ElemType::f64, "avg of {} values is not defined",
           elem_type_name(t));
  GT_CHECK(op == ReduceOp::sum || t != ElemType::bf16, "bfloat16 values are only summed, not {}", reduce_op_name(op));
}

namespace {

class DoneCollective final : public PendingCollective {
 public:
  bool test() override { return true; }
  void wait() override {}
};

class LocalCommunicator final : public Communicator {
 public:
  std::string backend() const override { return "local"; }
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }
  std::string host() const override { return host_name(); }

  void all_reduce_bytes(const void* send, void* recv, int64_t count, ElemType t, ReduceOp op) override {
    check_reduce_args(count, t, op);
    if (send != recv && count > 0) std::memmove(recv, send, static_cast<size_t>(count) * elem_size(t));
  }
  std::unique_ptr<PendingCollective> start_all_reduce_bytes(const void* send, void* recv, int64_t count, ElemType t,
                                                            ReduceOp op) override {
    all_reduce_bytes(send, recv, count, t, op);
    return std::make_unique<DoneCollective>();
  }
  void all_gather_bytes(const void* send, void* recv, int64_t count, ElemType t) override {
    check_reduce_args(count, t, ReduceOp::sum);
    if (send != recv && count > 0) std::memmove(recv, send, static_cast<size_t>(count) * elem_size(t));
  }
  void broadcast_bytes(void*, int64_t count, ElemType t, int root) override {
    check_reduce_args(count, t, ReduceOp::sum);
    GT_CHECK(root == 0, "broadcast from rank {} in a world of 1", root);
  }
  void barrier() override {}
  [[noreturn]] void abort(int exit_code) override {
    std::fflush(nullptr);
    std::_Exit(exit_code);
  }
};

// Every call goes to the lent communicator.
class BorrowedCommunicator final : public Communicator {
 public:
  explicit BorrowedCommunicator(Communicator& c) : c_(c) {}
  std::string backend() const override { return c_.backend(); }
  int rank() const override { return c_.rank(); }
  int world_size() const override { return c_.world_size(); }
  int local_rank() const override { return c_.local_rank(); }
  int local_size() const override { return c_.local_size(); }
  std::string host() const override { return c_.host(); }
  void set_timeout(double s) override { c_.set_timeout(s); }
  bool orders_on_device() const override { return c_.orders_on_device(); }
  void barrier() override { c_.barrier(); }
  [[noreturn]] void abort(int code) override {
    c_.abort(code);
    std::abort();  // not reached: the lent communicator ends the job
  }
  void all_reduce_bytes(const void* s, void* r, int64_t n, ElemType t, ReduceOp op) override {
    c_.all_reduce_bytes(s, r, n, t, op);
  }
  std::unique_ptr<PendingCollective> start_all_reduce_bytes(const void* s, void* r, int64_t n, ElemType t,
                                                            ReduceOp op) override {
    return c_.start_all_reduce_bytes(s, r, n, t, op);
  }
  void all_gather_bytes(const void* s, void* r, int64_t n, ElemType t) override { c_.all_gather_bytes(s, r, n, t); }
  void broadcast_bytes(void* d, int64_t n, ElemType t, int root) override { c_.broadcast_bytes(d, n, t, root); }

 private:
  Communicator& c_;
};

}  // namespace

std::unique_ptr<Communicator> make_local_communicator() { return std::make_unique<LocalCommunicator>(); }

std::unique_ptr<Communicator> borrow_communicator(Communicator& comm) {
  return std::make_unique<BorrowedCommunicator>(comm);
}

}  // namespace gt
