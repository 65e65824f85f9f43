// The CUDA backend's host-side rules as pure functions, tested on the CPU: cuDNN algorithm choice, in-place activations in GpuNet, and the trained-tensor comparison of the whole-step GPU tests.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/step_compare.h"
#include "train/optim.h"
#ifdef GANTRAIN_HAVE_CUDA
#include "cuda/conv_choice.h"
#include "cuda/buffer_plan.h"
#endif

namespace gt {
namespace {

// ---- step_compare: a sign flip of a near-zero gradient passes, a real error fails ------------------------

constexpr int64_t kSteps = 4;

OptimConfig adam() { return OptimConfig{}; }  // lr 2e-4, betas (0.5, 0.999): the DCGAN reference

// A bias vector as Adam leaves it after kSteps from zero: every element about lr * kSteps from 0, either way.
std::vector<float> adam_bias(int n, double move, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = static_cast<float>((rng() & 1) ? move : -move);
  return v;
}

TEST(StepCompare, MoveBoundIsTheOptimizersOwnStep) {
  const double lr = adam().lr;
  EXPECT_NEAR(step_compare::optimizer_move_bound(adam(), kSteps), lr * kSteps, 0.02 * lr * kSteps);
  OptimConfig rms;
  rms.kind = OptimizerKind::rmsprop;
  rms.lr = 1e-3;
  // RMSProp's first step divides by sqrt((1 - alpha) g^2): lr / sqrt(0.01) = 10 lr.
  EXPECT_NEAR(step_compare::optimizer_move_bound(rms, 1), 10 * rms.lr, 0.05 * rms.lr);
  OptimConfig sgd;
  sgd.kind = OptimizerKind::sgd;
  sgd.lr = 1e-3;
  sgd.momentum = 0.9;
  // SGD's step scales with the gradient: a near-zero gradient's flip costs next to nothing.
  EXPECT_LT(step_compare::optimizer_move_bound(sgd, kSteps), 1e-5);
}

TEST(StepCompare, OneSignFlipOfANearZeroGradientPasses) {
  const double move = step_compare::optimizer_move_bound(adam(), kSteps);
  const std::vector<float> cpu = adam_bias(16, move, 1);
  std::vector<float> gpu = cpu;
  gpu[5] = -gpu[5];  // that element's gradient was near zero and came out with the other sign
  const step_compare::Tolerance tol{2e-3, move, 0.002};
  const step_compare::Comparison r = step_compare::compare_trained(gpu.data(), cpu.data(), 16, tol);
  EXPECT_TRUE(r.ok) << r.detail();
  EXPECT_EQ(r.flips_allowed, 1);
  // The relative bound alone fails it: that was the false failure.
  EXPECT_GT(r.diff_norm, 0.4 * r.ref_norm);
  EXPECT_FALSE(step_compare::compare_trained(gpu.data(), cpu.data(), 16, {2e-3, 0, 0}).ok);
}

TEST(StepCompare, BiasMovedTheWrongWayOrNotAtAllFails) {
  const double move = step_compare::optimizer_move_bound(adam(), kSteps);
  const std::vector<float> cpu = adam_bias(16, move, 2);
  const step_compare::Tolerance tol{2e-3, move, 0.002};
  std::vector<float> wrong_sign = cpu;
  for (float& x : wrong_sign) x = -x;  // the bias gradient's sign is wrong
  EXPECT_FALSE(step_compare::compare_trained(wrong_sign.data(), cpu.data(), 16, tol).ok);
  const std::vector<float> not_updated(16, 0.f);  // the gradient never reached the optimizer
  EXPECT_FALSE(step_compare::compare_trained(not_updated.data(), cpu.data(), 16, tol).ok);
  std::vector<float> two_flips = cpu;  // more flips than the share allows for 16 elements (one)
  two_flips[0] = -two_flips[0];
  two_flips[9] = -two_flips[9];
  EXPECT_FALSE(step_compare::compare_trained(two_flips.data(), cpu.data(), 16, tol).ok);
}

TEST(StepCompare, WeightsWithinTheRelativeBoundPassAndARealErrorFails) {
  const double move = step_compare::optimizer_move_bound(adam(), kSteps);
  const int n = 4096;  // a conv weight: 16 output channels of 256
  std::mt19937 rng(3);
  std::normal_distribution<float> init(0.f, 0.02f), noise(0.f, 1.f);
  std::vector<float> cpu(n), gpu(n);
  for (int i = 0; i < n; ++i) cpu[i] = init(rng);
  // Summation-order noise: 1e-4 relative.
  for (int i = 0; i < n; ++i) gpu[i] = cpu[i] * (1.f + 1e-4f * noise(rng));
  const step_compare::Tolerance tol{2e-3, move, 0.002};
  EXPECT_TRUE(step_compare::compare_trained(gpu.data(), cpu.data(), n, tol).ok);
  // One output channel updated with a wrong gradient: its 256 elements moved 2 * move the wrong way.
  std::vector<float> bad = gpu;
  for (int i = 0; i < 256; ++i) bad[i] += static_cast<float>(2 * move * ((i & 1) ? 1 : -1));
  const step_compare::Comparison r = step_compare::compare_trained(bad.data(), cpu.data(), n, tol);
  EXPECT_FALSE(r.ok) << r.detail();
  // A scale error of 1% on every element.
  std::vector<float> scaled = cpu;
  for (float& x : scaled) x *= 1.01f;
  EXPECT_FALSE(step_compare::compare_trained(scaled.data(), cpu.data(), n, tol).ok);
}

TEST(StepCompare, ANonFiniteValueFails) {
  std::vector<float> cpu(8, 0.5f), gpu = cpu;
  gpu[3] = std::nanf("");
  const step_compare::Comparison r = step_compare::compare_trained(gpu.data(), cpu.data(), 8, {1, 1, 1});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.non_finite, 1);
}

#ifdef GANTRAIN_HAVE_CUDA
// ---- cuDNN algorithm choice --------------------------------------------------------------------------

using cuda::ConvCandidate;
using cuda::ConvChoicePolicy;
using cuda::ConvMath;
using cuda::choose_conv_candidate;

constexpr size_t kLimit = size_t{1} << 30;

TEST(ConvChoice, FastestDeterministicThatSucceededAndFits) {
  const std::vector<ConvCandidate> c = {
      {1, true, 0, false, ConvMath::default_math, 0.5f},       // fastest, not deterministic
      {2, false, 0, true, ConvMath::default_math, 0.6f},       // failed
      {3, true, kLimit + 1, true, ConvMath::default_math, 0.7f},  // over the workspace limit
      {4, true, 1024, true, ConvMath::default_math, 0.9f},
      {5, true, 0, true, ConvMath::default_math, 0.8f},
  };
  const auto r = choose_conv_candidate(c, {true, false, kLimit});
  EXPECT_EQ(r.index, 4);
  EXPECT_FALSE(r.nondeterministic_fallback);
  // Without the determinism requirement the fastest usable one wins.
  EXPECT_EQ(choose_conv_candidate(c, {false, false, kLimit}).index, 0);
}

TEST(ConvChoice, OnlyNonDeterministicCandidatesFallBackToTheFastestInsteadOfFailing) {
  const std::vector<ConvCandidate> c = {
      {7, true, 0, false, ConvMath::tensor_op, 0.9f},
      {0, true, 0, false, ConvMath::tensor_op, 0.4f},
      {1, false, 0, true, ConvMath::tensor_op, 0.1f},  // deterministic but it failed
  };
  const auto r = choose_conv_candidate(c, {true, false, kLimit});
  EXPECT_EQ(r.index, 1);
  EXPECT_TRUE(r.nondeterministic_fallback);
}

TEST(ConvChoice, NothingUsableIsMinusOne) {
  const std::vector<ConvCandidate> c = {{0, false, 0, true, ConvMath::fma, 0.1f},
                                        {1, true, kLimit * 2, true, ConvMath::fma, 0.2f}};
  EXPECT_EQ(choose_conv_candidate(c, {true, true, kLimit}).index, -1);
  EXPECT_EQ(choose_conv_candidate({}, {true, true, kLimit}).index, -1);
}

TEST(ConvChoice, Fp32RefusesTensorOpsAndPrefersFmaEntries) {
  // The default-math entry may have been timed as a TF32 kernel; it would run as FMA.
  const std::vector<ConvCandidate> c = {
      {1, true, 0, true, ConvMath::tensor_op, 0.1f},
      {2, true, 0, true, ConvMath::tensor_op_allow_conversion, 0.15f},
      {3, true, 0, true, ConvMath::default_math, 0.2f},
      {3, true, 0, true, ConvMath::fma, 0.6f},
      {4, true, 0, true, ConvMath::fma, 0.5f},
  };
  EXPECT_EQ(choose_conv_candidate(c, {true, true, kLimit}).index, 4);
  // No FMA entry: a default-math one is still usable (run with FMA math).
  const std::vector<ConvCandidate> no_fma(c.begin(), c.begin() + 3);
  EXPECT_EQ(choose_conv_candidate(no_fma, {true, true, kLimit}).index, 2);
  // tf32 and bf16 take tensor ops.
  EXPECT_EQ(choose_conv_candidate(c, {true, false, kLimit}).index, 0);
  // Determinism outranks FMA: a deterministic default-math entry before a non-deterministic FMA one.
  const std::vector<ConvCandidate> mixed = {{5, true, 0, false, ConvMath::fma, 0.1f},
                                            {6, true, 0, true, ConvMath::default_math, 0.3f}};
  const auto r = choose_conv_candidate(mixed, {true, true, kLimit});
  EXPECT_EQ(r.index, 1);
  EXPECT_FALSE(r.nondeterministic_fallback);
}

TEST(ConvChoice, EqualTimesKeepCudnnsOrder) {
  const std::vector<ConvCandidate> c = {{8, true, 0, true, ConvMath::tensor_op, 0.3f},
                                        {9, true, 0, true, ConvMath::tensor_op, 0.3f}};
  EXPECT_EQ(choose_conv_candidate(c, {true, false, kLimit}).index, 0);
}

// ---- GpuNet's in-place activations ------------------------------------------------------------------------

using cuda::BufferUse;
using cuda::plan_in_place;
constexpr BufferUse kKeepsInput = BufferUse::fresh_keeps_input, kFresh = BufferUse::fresh, kView = BufferUse::view,
                    kAct = BufferUse::activation_keeps_output;

TEST(BufferPlan, DcganNetworksRunTheirActivationsAsToday) {
  // G: ConvT, BN+ReLU (one op) x3, ConvT, Tanh: Tanh runs in place over the last ConvT's output.
  EXPECT_EQ(plan_in_place({kKeepsInput, kKeepsInput, kKeepsInput, kKeepsInput, kKeepsInput, kKeepsInput, kKeepsInput,
                           kKeepsInput, kAct}),
            std::vector<bool>({false, false, false, false, false, false, false, false, true}));
  // D: Conv, LeakyReLU (keeps its input), Conv, BN+LeakyReLU, ..., Conv: nothing in place.
  EXPECT_EQ(plan_in_place({kKeepsInput, kKeepsInput, kKeepsInput, kKeepsInput, kKeepsInput}),
            std::vector<bool>(5, false));
}

TEST(BufferPlan, NeverOverTheCallersInput) {
  EXPECT_EQ(plan_in_place({kAct}), std::vector<bool>({false}));
  EXPECT_EQ(plan_in_place({kView, kAct}), std::vector<bool>({true, false}));
}

TEST(BufferPlan, TwoOutputKeepingActivationsInARowDoNotShareABuffer) {
  // The second would overwrite the output the first one's backward reads.
  EXPECT_EQ(plan_in_place({kKeepsInput, kAct, kAct}), std::vector<bool>({false, true, false}));
  // A third gets a buffer of its own too: the second keeps its output.
  EXPECT_EQ(plan_in_place({kKeepsInput, kAct, kAct, kAct}), std::vector<bool>({false, true, false, false}));
}

TEST(BufferPlan, AnActivationAfterAViewOfAnotherActivationsOutputGetsItsOwnBuffer) {
  EXPECT_EQ(plan_in_place({kKeepsInput, kAct, kView, kAct}), std::vector<bool>({false, true, true, false}));
  // After a layout change (Reshape in NHWC) the buffer is new and nobody keeps it.
  EXPECT_EQ(plan_in_place({kKeepsInput, kAct, kFresh, kAct}), std::vector<bool>({false, true, false, true}));
}

TEST(BufferPlan, AnActivationMayOverwriteAnOutputNothingKeeps) {
  // Conv's output (conv keeps its input), a leaky ReLU's output (it keeps its input): free to overwrite.
  EXPECT_EQ(plan_in_place({kKeepsInput, kAct}), std::vector<bool>({false, true}));
  EXPECT_EQ(plan_in_place({kKeepsInput, kKeepsInput, kAct}), std::vector<bool>({false, false, true}));
  EXPECT_EQ(plan_in_place({kKeepsInput, kView, kAct}), std::vector<bool>({false, true, true}));
}
#endif

}  // namespace
}  // namespace gt
