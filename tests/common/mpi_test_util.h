// What the multi-rank gtest programs repeat: rank 0 reports, the other ranks print only their failures, and the job's exit code speaks for every rank.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>

#include "parallel/communicator.h"

namespace gt::test {

// On ranks other than 0: only failures, each prefixed with its rank.
class RankFailurePrinter final : public testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: %s\n", rank_, r.file_name() ? r.file_name() : "?", r.line_number(),
                 r.summary());
  }

 private:
  int rank_;
};

// Rank 0 keeps gtest's printer; the others print their failures only (mpirun's exit code says so).
inline void quiet_other_ranks(int rank) {
  if (rank == 0) return;
  auto& listeners = testing::UnitTest::GetInstance()->listeners();
  delete listeners.Release(listeners.default_result_printer());
  listeners.Append(new RankFailurePrinter(rank));
}

// RUN_ALL_TESTS on every rank, then 1 on every rank when any rank failed: rank 0's exit code (the one
// mpirun reports first) speaks for the job.
inline int run_all_tests_on_every_rank(Communicator& comm) {
  const int failed = RUN_ALL_TESTS();
  int64_t any = failed != 0;
  comm.all_reduce(&any, 1, ReduceOp::max);
  if (any && comm.rank() == 0 && failed == 0) std::fprintf(stderr, "a test failed on another rank\n");
  return any ? 1 : 0;
}

}  // namespace gt::test
