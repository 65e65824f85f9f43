// The MPI communicator and the data-parallel pieces on real ranks: run by ctest as mpirun -np 3 test_mpi_comm (rank 0 prints the report).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "common/mpi_test_util.h"
#include "common/test_util.h"
#include "core/bf16.h"
#include "core/rng.h"
#include "parallel/agreement.h"
#include "parallel/communicator.h"
#include "parallel/gradient_bucketer.h"
#include "parallel/launch.h"
#include "parallel/sync_batchnorm.h"
#include "nn/dcgan.h"
#include "nn/layers.h"
#include "train/cpu_step.h"


namespace gt {
namespace {

Communicator* g_comm = nullptr;  // set by main(); one communicator for every test of this process

Communicator& comm() { return *g_comm; }
int P() { return comm().world_size(); }
int R() { return comm().rank(); }

Tensor random_tensor(const Shape& shape, uint64_t seed, uint64_t offset = 0) {
  Tensor t(shape);
  fill_normal(t.f32(), t.numel(), 0.f, 1.f, seed, RngStream::test, offset);
  return t;
}

TEST(MpiCommunicator, SeesTheWholeJob) {
  EXPECT_EQ(comm().backend(), "mpi");
  EXPECT_GE(P(), 2) << "run this test with mpirun -np 2 or more";
  EXPECT_GE(comm().local_rank(), 0);
  EXPECT_LT(comm().local_rank(), comm().local_size());
  EXPECT_LE(comm().local_size(), P());
}

// Rank r contributes (r + 1) * (i % 7 + 1): every result is an exact small integer.
template <class T>
void check_all_reduce(int64_t n, ReduceOp op, bool in_place) {
  std::vector<T> send(static_cast<size_t>(n)), recv(static_cast<size_t>(n), T(-1));
  for (int64_t i = 0; i < n; ++i) send[i] = static_cast<T>((R() + 1) * (i % 7 + 1));
  if (in_place) {
    comm().all_reduce(send.data(), n, op);
    recv = send;
  } else {
    comm().all_reduce(send.data(), recv.data(), n, op);
  }
  const double ranks_sum = P() * (P() + 1) / 2.0;
  for (int64_t i = 0; i < n; ++i) {
    const double unit = static_cast<double>(i % 7 + 1);
    double want = 0;
    switch (op) {
      case ReduceOp::sum: want = ranks_sum * unit; break;
      case ReduceOp::avg: want = ranks_sum * unit / P(); break;
      case ReduceOp::max: want = P() * unit; break;
      case ReduceOp::min: want = unit; break;
    }
    ASSERT_NEAR(static_cast<double>(recv[i]), want, std::abs(want) * 1e-6) << "element " << i << " of " << n;
  }
}

TEST(MpiCommunicator, AllReduceEveryTypeOpAndForm) {
  for (int64_t n : {0, 1, 7, 100003})
    for (bool in_place : {true, false}) {
      SCOPED_TRACE(testing::Message() << "n " << n << (in_place ? " in place" : " out of place"));
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min}) {
        check_all_reduce<float>(n, op, in_place);
        check_all_reduce<double>(n, op, in_place);
      }
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::max, ReduceOp::min}) check_all_reduce<int64_t>(n, op, in_place);
    }
}

// dist.reduce_precision bf16: bfloat16 sums, each addition in float rounded to bf16 (MPI's user op), the same
// bits on every rank, the result one of the orders in which the ranks' values can be added.
TEST(MpiCommunicator, Bf16SumsRoundEachAdditionAndAgree) {
  const int64_t n = 20011;
  auto value = [](int r, int64_t i) {
    Tensor t({1});
    fill_normal(t.f32(), 1, 0.f, 1.f, 77, RngStream::test, static_cast<uint64_t>(r * 1000003 + i));
    return float_to_bf16_bits(t.f32()[0] * (i % 7 == 0 ? 1e-3f : 1.f));  // mixed magnitudes: rounding matters
  };
  auto add = [](uint16_t a, uint16_t b) { return float_to_bf16_bits(bf16_bits_to_float(a) + bf16_bits_to_float(b)); };
  for (bool in_place : {true, false}) {
    std::vector<uint16_t> mine(n), out(n, 0);
    for (int64_t i = 0; i < n; ++i) mine[static_cast<size_t>(i)] = value(R(), i);
    uint16_t* recv = in_place ? mine.data() : out.data();
    comm().start_all_reduce_bytes(mine.data(), recv, n, ElemType::bf16, ReduceOp::sum)->wait();
    int64_t outside = 0, rounded_away = 0;
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t got = recv[i];
      // Every order of adding the ranks' values, left to right.
      std::vector<int> order(static_cast<size_t>(P()));
      std::iota(order.begin(), order.end(), 0);
      bool found = false;
      double exact = 0;
      for (int r = 0; r < P(); ++r) exact += bf16_bits_to_float(value(r, i));
      do {
        uint16_t s = value(order[0], i);
        for (int k = 1; k < P(); ++k) s = add(s, value(order[static_cast<size_t>(k)], i));
        found = found || s == got;
      } while (!found && std::next_permutation(order.begin(), order.end()));
      outside += !found;
      rounded_away += static_cast<double>(bf16_bits_to_float(got)) != exact;
    }
    EXPECT_EQ(outside, 0) << "bf16 sums that no order of rounded additions gives";
    EXPECT_GT(rounded_away, n / 10) << "the sums were not rounded to bf16 (summed wider?)";
    std::vector<uint16_t> copy(recv, recv + n), first(copy);
    comm().broadcast(reinterpret_cast<uint8_t*>(first.data()), 2 * n, 0);
    EXPECT_EQ(copy, first) << "ranks hold different bf16 sums";
  }
  uint16_t x = 0;
  EXPECT_THROW(comm().start_all_reduce_bytes(&x, &x, 1, ElemType::bf16, ReduceOp::max), RuntimeError);
}

TEST(MpiCommunicator, NonBlockingAllReducesCompleteInAnyOrder) {
  std::vector<std::vector<float>> bufs;
  for (int k = 0; k < 5; ++k) bufs.emplace_back(1000 * (k + 1), static_cast<float>((R() + 1) * (k + 1)));
  std::vector<std::unique_ptr<PendingCollective>> pending;
  for (auto& b : bufs) pending.push_back(comm().start_all_reduce(b.data(), static_cast<int64_t>(b.size()), ReduceOp::sum));
  for (int k = 4; k >= 0; --k) {
    pending[k]->test();
    pending[k]->wait();
    EXPECT_TRUE(pending[k]->test());
  }
  const float ranks_sum = static_cast<float>(P() * (P() + 1) / 2);
  for (int k = 0; k < 5; ++k)
    for (float v : bufs[k]) ASSERT_EQ(v, ranks_sum * (k + 1));
  std::vector<double> avg(10, R());
  auto p = comm().start_all_reduce(avg.data(), 10, ReduceOp::avg);
  p->wait();
  for (double v : avg) EXPECT_DOUBLE_EQ(v, (P() - 1) / 2.0);
}

TEST(MpiCommunicator, AllGatherPutsRanksInOrder) {
  std::vector<float> mine = {static_cast<float>(R()), static_cast<float>(10 * R()), -1.f};
  std::vector<float> all(3 * static_cast<size_t>(P()));
  comm().all_gather(mine.data(), all.data(), 3);
  for (int r = 0; r < P(); ++r) {
    EXPECT_EQ(all[3 * r], r);
    EXPECT_EQ(all[3 * r + 1], 10 * r);
    EXPECT_EQ(all[3 * r + 2], -1.f);
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(P()));
  const uint8_t b = static_cast<uint8_t>(200 + R());
  comm().all_gather(&b, bytes.data(), 1);
  for (int r = 0; r < P(); ++r) EXPECT_EQ(bytes[r], 200 + r);
}

TEST(MpiCommunicator, BroadcastFromEveryRoot) {
  for (int root = 0; root < P(); ++root) {
    std::vector<int64_t> v(257, R() == root ? 1000 + root : -5);
    comm().broadcast(v.data(), 257, root);
    for (int64_t x : v) ASSERT_EQ(x, 1000 + root);
  }
  comm().barrier();
}

// ---- agreement -------------------------------------------------------------------------------------

TEST(Agreement, OneRanksErrorReachesEveryRankWithItsRank) {
  const int failing = P() - 1;
  try {
    run_agreed(comm(), [&] {
      if (R() == failing) user_error("data file missing on this node");
    });
    FAIL() << "no exception on rank " << R();
  } catch (const AgreedUserError& e) {
    const std::string text = e.what();
    EXPECT_CONTAINS(text, "data file missing on this node");
    EXPECT_CONTAINS(text, "[rank " + std::to_string(failing) + "@" + comm().host() + "]");
  }
  // Several failing ranks: the lowest one's error, as a runtime failure when it was one.
  try {
    run_agreed(comm(), [&] {
      if (R() >= 1) runtime_error("rank {} failed", R());
    });
    FAIL() << "no exception";
  } catch (const AgreedRuntimeError& e) {
    EXPECT_CONTAINS(std::string(e.what()), "rank 1 failed");
  }
  EXPECT_NO_THROW(run_agreed(comm(), [] {}));
}

TEST(Agreement, ConfigMismatchIsCaughtOnEveryRank) {
  const std::string same = "run:\n  seed: 1\ntrain:\n  max_steps: 20\n";
  EXPECT_NO_THROW(check_same_config_and_build(comm(), same));
  const std::string mine = R() == 1 ? "run:\n  seed: 1\ntrain:\n  max_steps: 5\n" : same;
  try {
    check_same_config_and_build(comm(), mine);
    FAIL() << "no exception on rank " << R();
  } catch (const AgreedUserError& e) {
    const std::string text = e.what();
    EXPECT_CONTAINS(text, "rank 1 (");
    EXPECT_CONTAINS(text, "different config");
    if (R() == 0) {
      EXPECT_CONTAINS(text, "train.max_steps: 20 vs 5 on rank 1");
    }
  }
}

TEST(Agreement, PreflightGathersEveryRanksDescription) {
  const auto lines = preflight(comm(), "rank " + std::to_string(R()) + " here");
  ASSERT_EQ(lines.size(), static_cast<size_t>(P()));
  for (int r = 0; r < P(); ++r) EXPECT_EQ(lines[r], "rank " + std::to_string(r) + " here");
}

// ---- gradient buckets --------------------------------------------------------------------------

DcganSpec tiny_spec() { return DcganSpec{8, 4, 4, 32, 1, 0.2f}; }

// Gradients of D for rank r's input (keyed by r), from a fresh zero.
std::vector<std::vector<float>> grads_for_input(Sequential& D, int r) {
  D.zero_grad();
  Tensor y = D.forward(random_tensor({2, 1, 32, 32}, 100 + r), Mode::train);
  D.backward(random_tensor(y.shape(), 200 + r));
  std::vector<std::vector<float>> out;
  for (auto& np : D.named_params()) out.emplace_back(np.param->grad.f32(), np.param->grad.f32() + np.param->grad.numel());
  return out;
}

TEST(GradientBucketer, SumsEveryRanksGradientsInEveryBucketSize) {
  for (int64_t bucket_elems : {int64_t{1}, int64_t{500}, int64_t{1} << 30}) {
    SCOPED_TRACE(bucket_elems);
    Sequential D = make_dcgan_discriminator(tiny_spec());
    dcgan_init(D, 0.02f, 9, 2);
    // Every rank computes every rank's gradients without the reducer, to know the sum.
    std::vector<std::vector<double>> want;
    for (int r = 0; r < P(); ++r) {
      auto g = grads_for_input(D, r);
      if (want.empty())
        for (auto& t : g) want.emplace_back(t.size(), 0.0);
      for (size_t i = 0; i < g.size(); ++i)
        for (size_t j = 0; j < g[i].size(); ++j) want[i][j] += g[i][j];
    }
    GradientBucketer bucketer(comm(), D.flat_grads(), D.flat_size(), bucket_elems);
    D.zero_grad();
    Tensor y = D.forward(random_tensor({2, 1, 32, 32}, 100 + R()), Mode::train);
    bucketer.arm();
    D.backward(random_tensor(y.shape(), 200 + R()), {.on_final = bucketer.hook()});
    bucketer.finish();
    auto params = D.named_params();
    for (size_t i = 0; i < params.size(); ++i)
      for (int64_t j = 0; j < params[i].param->grad.numel(); ++j)
        ASSERT_NEAR(params[i].param->grad.f32()[j], want[i][j], 1e-5 * (1 + std::abs(want[i][j])))
            << params[i].name << "[" << j << "]";
    // Every rank holds the same bits.
    std::vector<float> flat;
    for (auto& np : params) flat.insert(flat.end(), np.param->grad.f32(), np.param->grad.f32() + np.param->grad.numel());
    std::vector<float> lowest = flat;
    comm().all_reduce(lowest.data(), static_cast<int64_t>(lowest.size()), ReduceOp::min);
    EXPECT_EQ(0, std::memcmp(lowest.data(), flat.data(), flat.size() * sizeof(float)));
  }
}

// ---- synchronized batch norm ---------------------------------------------------------------------

// The bucketer with a bf16 wire: each rank's gradients rounded to bf16, summed in bf16, widened back.
TEST(GradientBucketer, Bf16WireSumsTheRoundedGradientsOfEveryRank) {
  Sequential D = make_dcgan_discriminator(tiny_spec());
  dcgan_init(D, 0.02f, 9, 2);
  std::vector<double> exact(static_cast<size_t>(D.flat_size()), 0.0);
  for (int r = 0; r < P(); ++r) {
    auto g = grads_for_input(D, r);
    size_t k = 0;
    for (auto& t : g)
      for (float v : t) exact[k++] += v;
  }
  CpuStepOps ops;
  GradientBucketer bucketer(comm(), D.flat_grads(), D.flat_size(), 700, ops.gradient_wire(D.flat_size(), ElemType::bf16));
  D.zero_grad();
  Tensor y = D.forward(random_tensor({2, 1, 32, 32}, 100 + R()), Mode::train);
  bucketer.arm();
  D.backward(random_tensor(y.shape(), 200 + R()), {.on_final = bucketer.hook()});
  bucketer.finish();
  double diff = 0, norm = 0;
  int64_t not_bf16 = 0;
  size_t k = 0;
  for (const NamedParam& p : D.named_params())
    for (int64_t j = 0; j < p.param->grad.numel(); ++j, ++k) {
      const float g = p.param->grad.f32()[j];
      uint32_t bits;
      std::memcpy(&bits, &g, sizeof bits);
      not_bf16 += (bits & 0xffffu) != 0;
      diff += (g - exact[k]) * (g - exact[k]);
      norm += exact[k] * exact[k];
    }
  EXPECT_EQ(not_bf16, 0) << "gradients that did not come back from bfloat16";
  // Rounding each share and each addition to 8 significant bits: within a few 2^-9 of the exact sums.
  EXPECT_LT(std::sqrt(diff / norm), 4.0 / 512) << "relative error of the bf16 sums";
  EXPECT_GT(diff, 0.0);
}

TEST(SyncBatchNorm, ShardsNormalizeAsTheWholeBatch) {
  const int C = 6, n_per_rank = 2, N = n_per_rank * P();
  const Tensor x_all = random_tensor({N, C, 5, 5}, 51), dy_all = random_tensor({N, C, 5, 5}, 52);
  const int64_t per_sample = C * 25;
  auto shard = [&](const Tensor& t) {
    Tensor s({n_per_rank, C, 5, 5});
    std::memcpy(s.f32(), t.f32() + R() * n_per_rank * per_sample, s.nbytes());
    return s;
  };
  LayerPtr whole = make_batchnorm2d(C), mine = make_batchnorm2d(C);
  for (Layer* l : {whole.get(), mine.get()}) {
    l->params()[0]->value.copy_from(random_tensor({C}, 53));
    l->params()[1]->value.copy_from(random_tensor({C}, 54));
  }
  ASSERT_TRUE(set_batch_stats_reducer(*mine, [](double* v, int64_t n) { comm().all_reduce(v, n, ReduceOp::sum); }));
  Tensor y_all = whole->forward(x_all, Mode::train), dx_all = whole->backward(dy_all);
  Tensor y = mine->forward(shard(x_all), Mode::train), dx = mine->backward(shard(dy_all));
  for (int64_t i = 0; i < y.numel(); ++i) {
    ASSERT_NEAR(y.f32()[i], y_all.f32()[R() * n_per_rank * per_sample + i], 1e-5) << i;
    ASSERT_NEAR(dx.f32()[i], dx_all.f32()[R() * n_per_rank * per_sample + i], 1e-5) << i;
  }
  // Running statistics: the global batch's, on every rank.
  for (size_t b = 0; b < 2; ++b)
    for (int c = 0; c < C; ++c)
      EXPECT_NEAR(mine->buffers()[b]->value.f32()[c], whole->buffers()[b]->value.f32()[c], 1e-6);
  // Parameter gradients are this rank's share: summed over the ranks they are the whole batch's.
  for (size_t p = 0; p < 2; ++p) {
    std::vector<float> g(mine->params()[p]->grad.f32(), mine->params()[p]->grad.f32() + C);
    comm().all_reduce(g.data(), C, ReduceOp::sum);
    for (int c = 0; c < C; ++c) EXPECT_NEAR(g[c], whole->params()[p]->grad.f32()[c], 1e-5);
  }
}

TEST(GenerateAcrossRanks, GathersTheWholeGridInOrder) {
  Sequential G = make_dcgan_generator(tiny_spec());
  dcgan_init(G, 0.02f, 4, 1);
  for (int n : {1, P(), 2 * P() + 1}) {  // fewer rows than ranks, exactly one each, and a remainder
    const Tensor z = random_tensor({n, 8}, 61);
    const Tensor all = generate_across_ranks(G, z, comm()), local = generate(G, z);
    ASSERT_EQ(all.shape(), local.shape());
    for (int64_t i = 0; i < all.numel(); ++i) ASSERT_NEAR(all.f32()[i], local.f32()[i], 1e-6) << "n " << n << " i " << i;
  }
}

}  // namespace
}  // namespace gt

int main(int argc, char** argv) {
  gt::MpiRuntime mpi(&argc, &argv);
  auto comm = gt::open_communicator(gt::DistBackend::mpi, 60);
  gt::g_comm = comm.get();
  testing::InitGoogleTest(&argc, argv);
  // Rank 0 reports; the others stay quiet unless one of their checks fails (then mpirun's exit code says so).
  gt::test::quiet_other_ranks(comm->rank());
  const int rc = gt::test::run_all_tests_on_every_rank(*comm);
  comm.reset();
  return rc;
}
