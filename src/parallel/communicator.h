// The communicator interface of data-parallel training: all-reduce, all-gather, broadcast, barrier, abort over the ranks of one job.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>

namespace gt {

// bf16: bfloat16 bit patterns (uint16_t, core/bf16.h), the wire format of dist.reduce_precision bf16; summed
// only, each addition in float and rounded to bf16 (as NCCL's ncclBfloat16 sum).
enum class ElemType : uint8_t { f32, f64, i64, u8, bf16 };
enum class ReduceOp : uint8_t { sum, avg, max, min };  // avg: f32 and f64 only; bf16: sum only

size_t elem_size(ElemType t);
const char* elem_type_name(ElemType t);  // "float", "double", "int64", "uint8", "bfloat16" (nccl-tests' names)
const char* reduce_op_name(ReduceOp op);
// Every communicator's argument rules for an all-reduce: count >= 0, avg of f32 and f64 only, bf16 summed
// only (RuntimeError naming the rule).
void check_reduce_args(int64_t count, ElemType t, ReduceOp op);

template <class T>
constexpr ElemType elem_type_of() {
  if constexpr (std::is_same_v<T, float>) return ElemType::f32;
  else if constexpr (std::is_same_v<T, double>) return ElemType::f64;
  else if constexpr (std::is_same_v<T, int64_t>) return ElemType::i64;
  else {
    static_assert(std::is_same_v<T, uint8_t>, "communicators move float, double, int64_t and uint8_t");
    return ElemType::u8;
  }
}

// A collective that was started and may still be running. Its buffers must stay untouched until it
// completes. Destroying an unfinished one leaks it (only ever done on the way to an abort).
class PendingCollective {
 public:
  virtual ~PendingCollective() = default;
  virtual bool test() = 0;  // lets the library make progress; true once complete
  virtual void wait() = 0;  // blocks until complete (throws RuntimeError after the communicator's timeout)
  // Makes the work queued next on the compute stream wait for this collective on the device, and returns at
  // once: true where the communicator can (NCCL: the stream waits for the collective's event; the host's
  // deadline then applies where it next waits for that stream, NcclCommunicator::wait_event). false where it
  // cannot (host memory: MPI, local, the staged device communicator): the caller must wait().
  virtual bool order_before_device_work() { return false; }
};

// One process's view of the job: rank r of P. A single process is rank 0 of 1 and runs the same code.
// Every collective must be called by every rank, in the same order, with the same counts.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string backend() const = 0;  // "local", "mpi"
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual int local_rank() const = 0;  // among the ranks on this node
  virtual int local_size() const = 0;
  virtual std::string host() const = 0;
  // How long a collective may wait for the other ranks before it fails (0 = forever).
  virtual void set_timeout(double seconds) { (void)seconds; }
  // Whether started collectives can be ordered before later device work without a host wait
  // (PendingCollective::order_before_device_work): NCCL.
  virtual bool orders_on_device() const { return false; }

  // recv = op over the ranks of send, element-wise; send == recv is the in-place form.
  template <class T>
  void all_reduce(const T* send, T* recv, int64_t count, ReduceOp op) {
    all_reduce_bytes(send, recv, count, elem_type_of<T>(), op);
  }
  template <class T>
  void all_reduce(T* data, int64_t count, ReduceOp op) {
    all_reduce_bytes(data, data, count, elem_type_of<T>(), op);
  }
  // The all-reduce started now and completed by wait() on the returned handle (in place, or out of place).
  template <class T>
  std::unique_ptr<PendingCollective> start_all_reduce(T* data, int64_t count, ReduceOp op) {
    return start_all_reduce_bytes(data, data, count, elem_type_of<T>(), op);
  }
  template <class T>
  std::unique_ptr<PendingCollective> start_all_reduce(const T* send, T* recv, int64_t count, ReduceOp op) {
    return start_all_reduce_bytes(send, recv, count, elem_type_of<T>(), op);
  }
  // recv[r * count + i] = send[i] of rank r: world_size() * count elements in rank order.
  template <class T>
  void all_gather(const T* send, T* recv, int64_t count) {
    all_gather_bytes(send, recv, count, elem_type_of<T>());
  }
  // data on every rank becomes root's data.
  template <class T>
  void broadcast(T* data, int64_t count, int root) {
    broadcast_bytes(data, count, elem_type_of<T>(), root);
  }
  virtual void barrier() = 0;
  // Ends every process of the job with exit_code, now. Used when one rank fails alone, so that
  // the others, possibly waiting in a collective for it, do not hang.
  [[noreturn]] virtual void abort(int exit_code) = 0;

  // Raw forms behind the typed helpers above.
  virtual void all_reduce_bytes(const void* send, void* recv, int64_t count, ElemType t, ReduceOp op) = 0;
  virtual std::unique_ptr<PendingCollective> start_all_reduce_bytes(const void* send, void* recv, int64_t count,
                                                                    ElemType t, ReduceOp op) = 0;
  virtual void all_gather_bytes(const void* send, void* recv, int64_t count, ElemType t) = 0;
  virtual void broadcast_bytes(void* data, int64_t count, ElemType t, int root) = 0;
};

// World size 1: every collective is a copy (or nothing); abort exits the process.
std::unique_ptr<Communicator> make_local_communicator();

// comm lent as an owned communicator (every call goes to comm, which must outlive it), for a device
// communicator that owns its bootstrap.
std::unique_ptr<Communicator> borrow_communicator(Communicator& comm);

}  // namespace gt
