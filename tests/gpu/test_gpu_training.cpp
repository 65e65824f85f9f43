// Whole DCGAN training steps: the CUDA engine against the CPU engine (parameters, BN buffers, optimizer state, losses, samples) per precision and layout; skips without a GPU.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/rng.h"
#include "data/image_source.h"
#include "cuda/device.h"
#include "parallel/communicator.h"
#include "nn/dcgan.h"
#include "common/require_gpu.h"
#include "common/step_compare.h"
#include "train/engine.h"
#include "train/model_state.h"
#include "train/optim.h"

namespace gt {
namespace {

constexpr int kBatch = 16;
constexpr int kSteps = 4;
constexpr uint64_t kSeed = 99;

DcganSpec tiny_spec(NormKind d_norm = NormKind::batch) {
  DcganSpec s{16, 16, 16, 32, 3, 0.2f};
  s.d_norm = d_norm;
  return s;
}

// One pair of host models with their optimizers, as the trainer makes them.
struct HostModels {
  Sequential G, D;
  std::unique_ptr<Optimizer> opt_g, opt_d;
  GanModels m;
  explicit HostModels(const std::string& optimizer, NormKind d_norm = NormKind::batch)
      : G(make_dcgan_generator(tiny_spec())), D(make_dcgan_discriminator(tiny_spec(d_norm))) {
    dcgan_init(G, 0.02f, kSeed, 1);
    dcgan_init(D, 0.02f, kSeed, 2);
    OptimConfig c;
    EXPECT_TRUE(parse_choice(optimizer, &c.kind)) << optimizer;
    c.momentum = optimizer == "adam" ? 0.0 : 0.9;
    c.lr = optimizer == "adam" ? 2e-4 : 1e-3;
    opt_g = make_optimizer(c, G.named_params());
    opt_d = make_optimizer(c, D.named_params());
    m = GanModels{&G, &D, opt_g.get(), opt_d.get()};
  }
};

// The stored bytes of a batch (NHWC uint8) and the float batch the loader would make of them.
struct Batch {
  Tensor u8, f32;
};
Batch make_batch(int64_t step, bool flip) {
  const DcganSpec s = tiny_spec();
  const int R = s.resolution, C = s.channels;
  Batch b{Tensor({kBatch, R, R, C}, DType::u8), Tensor({kBatch, C, R, R})};
  std::mt19937 rng(static_cast<uint32_t>(1000 + step));
  for (int64_t i = 0; i < b.u8.numel(); ++i) b.u8.u8()[i] = static_cast<uint8_t>(rng() & 0xFF);
  for (int i = 0; i < kBatch; ++i) {
    const bool mirrored = flip && flip_drawn(kSeed, step, i);
    hwc_u8_to_chw_f32(b.u8.u8() + static_cast<int64_t>(i) * R * R * C, R, R, C, C, mirrored,
                      b.f32.f32() + static_cast<int64_t>(i) * C * R * R);
  }
  return b;
}

using step_compare::rel_diff;

struct Case {
  std::string name, precision, layout;
  bool graph = true, u8 = false, flip = false;
  float clip = 0.f;
  std::string optimizer = "adam";
  double param_tol, loss_tol;
  double flip_fraction;  // parameters: the share of elements whose gradient may change sign (step_compare.h)
};

std::vector<Case> cases() {
  // Tolerances: fp32 differs from the CPU only in the order of sums (cuDNN's and ours); tf32 and bf16
  // round products (and bf16 every activation) on top. Adam's and RMSProp's normalized steps turn a
  // near-zero gradient whose sign differs into a full two-way step for that element: parameters are
  // compared with a floor of that size for flip_fraction of their elements (step_compare.h). The fractions
  // are first estimates (the chance that a gradient is within the precision's error of zero, over 4
  // steps), to be calibrated on a GPU.
  return {
      {"fp32_nchw_graph", "fp32", "nchw", true, false, false, 0.f, "adam", 2e-3, 1e-4, 0.002},
      {"fp32_nchw_eager", "fp32", "nchw", false, false, false, 0.f, "adam", 2e-3, 1e-4, 0.002},
      {"fp32_nchw_u8_flip_clip", "fp32", "nchw", true, true, true, 0.5f, "adam", 2e-3, 1e-4, 0.002},
      {"fp32_nhwc", "fp32", "nhwc", true, true, false, 0.f, "adam", 2e-3, 1e-4, 0.002},
      {"fp32_rmsprop", "fp32", "nchw", true, false, false, 0.f, "rmsprop", 2e-3, 1e-4, 0.002},
      {"fp32_sgd", "fp32", "nchw", true, false, false, 0.f, "sgd", 2e-3, 1e-4, 0.002},
      {"tf32_nchw", "tf32", "nchw", true, true, false, 0.f, "adam", 3e-2, 1e-2, 0.01},
      {"bf16_nhwc", "bf16", "nhwc", true, true, true, 0.f, "adam", 8e-2, 5e-2, 0.03},
      {"bf16_nchw", "bf16", "nchw", false, true, false, 0.f, "adam", 8e-2, 5e-2, 0.03},
  };
}

EngineOptions options(const Case& c, const std::string& device, const GanObjective& objective = {}) {
  EngineOptions o;
  o.objective = objective;
  o.device = device == "cuda" ? Device::cuda : Device::cpu;
  EXPECT_TRUE(parse_choice(c.precision, &o.precision)) << c.precision;
  EXPECT_TRUE(parse_choice(c.layout, &o.layout)) << c.layout;
  o.cuda_graph = c.graph;
  o.global_batch = o.local_batch = kBatch;
  o.seed = kSeed;
  o.clip_grad_norm = c.clip;
  o.flip = c.flip;
  o.nz = tiny_spec().nz;
  return o;
}

class GpuTraining : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    GT_REQUIRE_GPU();
  }
};

// kSteps steps of the CPU and the CUDA engine from the same models and batches (n_critic batches a
// step, batch number step * n_critic + k), then every parameter, buffer, optimizer state and sample.
// With ema_beta > 0 both engines keep G_ema too, compared at the end like G.
void compare_engines(const Case& c, const GanObjective& objective, double ema_beta = 0,
                     NormKind d_norm = NormKind::batch, int64_t micro_batch = 0) {
  HostModels cpu_models(c.optimizer, d_norm), gpu_models(c.optimizer, d_norm);
  auto comm_cpu = make_local_communicator(), comm_gpu = make_local_communicator();
  EngineOptions cpu_options = options(c, "cpu", objective), gpu_options = options(c, "cuda", objective);
  cpu_options.micro_batch = gpu_options.micro_batch = micro_batch;
  std::unique_ptr<Sequential> cpu_ema, gpu_ema;
  if (ema_beta > 0) {
    for (auto* slot : {&cpu_ema, &gpu_ema}) {
      *slot = std::make_unique<Sequential>(make_dcgan_generator(tiny_spec()));
      std::copy_n(cpu_models.G.flat_params(), cpu_models.G.flat_size(), (*slot)->flat_params());
    }
    cpu_options.ema.beta = gpu_options.ema.beta = ema_beta;
    cpu_options.ema_host = cpu_ema.get();
    gpu_options.ema_host = gpu_ema.get();
  }
  auto cpu = make_engine(cpu_options, cpu_models.m, *comm_cpu);
  auto gpu = make_engine(gpu_options, gpu_models.m, *comm_gpu);
  ASSERT_TRUE(gpu->wants_u8_batches());
  const int K = objective.n_critic;
  for (int64_t step = 0; step < kSteps; ++step) {
    std::vector<Tensor> cpu_batches, gpu_batches;
    for (int k = 0; k < K; ++k) {
      Batch b = make_batch(step * K + k, c.flip);
      cpu_batches.push_back(b.f32);
      Tensor host = gpu->make_batch_buffer(c.u8 ? b.u8.shape() : b.f32.shape(), c.u8 ? DType::u8 : DType::f32);
      host.copy_from(c.u8 ? b.u8 : b.f32);
      gpu_batches.push_back(host);
    }
    cpu->submit(cpu_batches, step);
    const StepResult rc = cpu->wait();
    gpu->submit(gpu_batches, step);
    const StepResult rg = gpu->wait();
    SCOPED_TRACE("step " + std::to_string(step));
    EXPECT_NEAR(rg.d_loss, rc.d_loss, c.loss_tol * std::abs(rc.d_loss));
    EXPECT_NEAR(rg.g_loss, rc.g_loss, c.loss_tol * std::abs(rc.g_loss));
    EXPECT_NEAR(rg.d_real, rc.d_real, c.loss_tol * std::abs(rc.d_real) + 1e-6);
    EXPECT_NEAR(rg.d_fake, rc.d_fake, c.loss_tol * std::abs(rc.d_fake) + 1e-6);
    EXPECT_NEAR(rg.d_penalty, rc.d_penalty, c.loss_tol * std::abs(rc.d_penalty) + 1e-6);
    if (objective.gp_weight > 0) {
      EXPECT_GT(rc.d_penalty, 0);  // every step of these cases has a penalized critic batch
    }
    // The NaN guard's gradient norms (one-block l2_norm kernel vs the CPU loop, both summing in double).
    EXPECT_NEAR(rg.d_grad_norm, rc.d_grad_norm, 10 * c.loss_tol * rc.d_grad_norm);
    EXPECT_NEAR(rg.g_grad_norm, rc.g_grad_norm, 10 * c.loss_tol * rc.g_grad_norm);
    EXPECT_GT(rc.d_grad_norm, 0);
  }
  gpu->sync_to_host();
  // Each network's optimizer took kSteps steps with the same configuration.
  const step_compare::Tolerance param_tol{
      c.param_tol, step_compare::optimizer_move_bound(cpu_models.opt_g->config(), kSteps), c.flip_fraction};
  for (auto [cn, gn] : {std::pair{&cpu_models.G, &gpu_models.G}, std::pair{&cpu_models.D, &gpu_models.D}}) {
    auto cp = cn->named_params(), gp = gn->named_params();
    for (size_t i = 0; i < cp.size(); ++i) {
      const Tensor &g = gp[i].param->value, &w = cp[i].param->value;
      const step_compare::Comparison r = step_compare::compare_trained(g.f32(), w.f32(), w.numel(), param_tol);
      EXPECT_TRUE(r.ok) << cp[i].name << ": " << r.detail();
    }
    auto cb = cn->named_buffers(), gb = gn->named_buffers();
    for (size_t i = 0; i < cb.size(); ++i) {
      if (cb[i].buffer->value.dtype() == DType::i64) {
        EXPECT_EQ(gb[i].buffer->value.i64()[0], cb[i].buffer->value.i64()[0]) << cb[i].name;
      } else {
        EXPECT_LE(rel_diff(gb[i].buffer->value, cb[i].buffer->value), c.param_tol) << cb[i].name;
      }
    }
  }
  if (cpu_ema) {  // the averages after sync_to_host, against the CPU engine's
    const step_compare::Tolerance ema_tol{
        c.param_tol, step_compare::optimizer_move_bound(cpu_models.opt_g->config(), kSteps), c.flip_fraction};
    auto cp = cpu_ema->named_params(), gp = gpu_ema->named_params();
    for (size_t i = 0; i < cp.size(); ++i) {
      const step_compare::Comparison r = step_compare::compare_trained(gp[i].param->value.f32(), cp[i].param->value.f32(),
                                                                       cp[i].param->value.numel(), ema_tol);
      EXPECT_TRUE(r.ok) << "G_ema " << cp[i].name << ": " << r.detail();
    }
  }
  for (auto [co, go] : {std::pair{cpu_models.opt_g.get(), gpu_models.opt_g.get()},
                        std::pair{cpu_models.opt_d.get(), gpu_models.opt_d.get()}}) {
    EXPECT_EQ(go->step_count(), co->step_count());
    auto cs = co->state(), gs = go->state();
    ASSERT_EQ(cs.size(), gs.size());
    for (size_t i = 0; i < cs.size(); ++i)
      EXPECT_LE(rel_diff(*gs[i].tensor, *cs[i].tensor), 10 * c.param_tol) << cs[i].name;
  }
  // Samples: eval-mode G of the synced model on both sides.
  Tensor z({8, tiny_spec().nz});
  fill_noise(z.f32(), 8, tiny_spec().nz, kSeed, 12345, 0);
  EXPECT_LE(rel_diff(gpu->generate(z), generate(cpu_models.G, z)), 10 * c.param_tol);
}

TEST_P(GpuTraining, StepsMatchTheCpuEngine) { compare_engines(GetParam(), GanObjective{}); }

// Every objective's whole step (the loss kernel, weight clipping in the optimizer, critic iterations,
// fresh G noise) against the CPU engine, at fp32 with SGD (a smooth update, so the fp32 bounds hold).
struct ObjectiveCase {
  std::string name;
  GanObjective objective;
  double ema_beta = 0;
  NormKind d_norm = NormKind::batch;
  int engine_case = 5;  // the row of cases(): fp32_sgd (NCHW, CUDA graphs) unless a format is the point
  int64_t micro_batch = 0;  // the large-batch plan's micro-batch (0: the whole batch in one pass)
};

class GpuObjectives : public ::testing::TestWithParam<ObjectiveCase> {
 protected:
  void SetUp() override { GT_REQUIRE_GPU(); }
};

TEST_P(GpuObjectives, StepsMatchTheCpuEngine) {
  const Case c = cases()[static_cast<size_t>(GetParam().engine_case)];
  compare_engines(c, GetParam().objective, GetParam().ema_beta, GetParam().d_norm, GetParam().micro_batch);
}

std::vector<ObjectiveCase> objective_cases() {
  GanObjective wgan, hinge, bce;
  wgan.kind = LossKind::wasserstein, wgan.clip_critic = 0.01f, wgan.n_critic = 3, wgan.fresh_g_noise = true;
  hinge.kind = LossKind::hinge, hinge.drift = 0.25f, hinge.n_critic = 2;
  bce.drift = 0.1f, bce.n_critic = 2, bce.fresh_g_noise = true;
  // WGAN-GP: the penalty's double backward on a layer-norm critic (NCHW with graphs, NHWC, bf16 NHWC) and
  // on one without normalization with lazy regularization (no graphs: the step changes from batch to batch).
  GanObjective gp, lazy;
  gp.kind = LossKind::wasserstein, gp.gp_weight = 10.f, gp.drift = 0.001f, gp.n_critic = 2;
  lazy.kind = LossKind::wasserstein, lazy.gp_weight = 10.f, lazy.gp_every = 2, lazy.n_critic = 3;
  auto row = [](const char* name) {
    const std::vector<Case> all = cases();
    for (size_t i = 0; i < all.size(); ++i)
      if (all[i].name == name) return static_cast<int>(i);
    ADD_FAILURE() << "no engine case " << name;
    return 0;
  };
  return {{"wgan_clip_ncritic3_fresh", wgan, 0},
          {"hinge_drift_ncritic2", hinge, 0},
          {"bce_drift_ncritic2_fresh", bce, 0},
          {"bce_ema", GanObjective{}, 0.9},
          {"wgangp_layer_ncritic2", gp, 0, NormKind::layer, row("fp32_sgd")},
          {"wgangp_layer_ncritic2_nhwc", gp, 0, NormKind::layer, row("fp32_nhwc")},
          {"wgangp_layer_ncritic2_bf16", gp, 0, NormKind::layer, row("bf16_nhwc")},
          {"wgangp_none_lazy2", lazy, 0, NormKind::none, row("fp32_sgd")},
          // Gradient accumulation: 4 micro-batches of 4 per update (batch norm per micro-batch), with graphs.
          {"accumulate4_bn", GanObjective{}, 0, NormKind::batch, row("fp32_sgd"), kBatch / 4},
          {"accumulate2_wgangp_bf16", gp, 0, NormKind::layer, row("bf16_nhwc"), kBatch / 2}};
}

INSTANTIATE_TEST_SUITE_P(Objectives, GpuObjectives, ::testing::ValuesIn(objective_cases()),
                         [](const ::testing::TestParamInfo<ObjectiveCase>& i) { return i.param.name; });

// A NaN-guard rollback: the host models reloaded from a snapshot and pushed into a running engine
// (load_from_host, into the buffers its CUDA graphs point at) train the next steps exactly as they did
// the first time from that snapshot: the same bits, since the engine, its algorithms and inputs are the same.
TEST(GpuTrainingRollback, LoadFromHostReplaysTheSameSteps) {
  GT_REQUIRE_GPU();
  Case c = cases()[0];
  c.graph = true;
  HostModels h("adam");
  auto comm = make_local_communicator();
  auto gpu = make_engine(options(c, "cuda"), h.m, *comm);
  auto run = [&](int64_t first, int64_t n) {
    std::vector<StepResult> out;
    for (int64_t step = first; step < first + n; ++step) {
      Batch b = make_batch(step, false);
      gpu->submit(b.f32, step);
      out.push_back(gpu->wait());
    }
    return out;
  };
  run(0, 3);
  gpu->sync_to_host();
  Checkpoint snapshot;
  export_state_dict(h.G, "G/params", snapshot.groups);
  export_state_dict(h.D, "D/params", snapshot.groups);
  export_optimizer(*h.opt_g, "G/optim", snapshot.groups);
  export_optimizer(*h.opt_d, "D/optim", snapshot.groups);
  const std::vector<StepResult> first = run(3, 3);
  import_state_dict(h.G, snapshot, "G/params", "snapshot");
  import_state_dict(h.D, snapshot, "D/params", "snapshot");
  import_optimizer(*h.opt_g, snapshot, "G/optim", "snapshot");
  import_optimizer(*h.opt_d, snapshot, "D/optim", "snapshot");
  gpu->load_from_host();
  const std::vector<StepResult> again = run(3, 3);
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(again[i].d_loss, first[i].d_loss) << "step " << 3 + i;
    EXPECT_EQ(again[i].g_loss, first[i].g_loss) << "step " << 3 + i;
    EXPECT_EQ(again[i].d_grad_norm, first[i].d_grad_norm) << "step " << 3 + i;
  }
  gpu->sync_to_host();
  EXPECT_EQ(h.opt_g->step_count(), 6);
}

// A graph replay must run the eager step: the same kernels in the same order. The two engines time
// cuDNN's algorithms each on their own and may pick different ones, so the comparison allows the last
// bits of fp32 summation order, far below what a missing or misordered kernel would change.
TEST(GpuTrainingGraph, ReplayMatchesEager) {
  GT_REQUIRE_GPU();
  Case c = cases()[0];
  HostModels a("adam"), b("adam");
  auto ca = make_local_communicator(), cb = make_local_communicator();
  c.graph = true;
  auto graphed = make_engine(options(c, "cuda"), a.m, *ca);
  c.graph = false;
  auto eager = make_engine(options(c, "cuda"), b.m, *cb);
  for (int64_t step = 0; step < kSteps + 2; ++step) {
    Batch batch = make_batch(step, false);
    graphed->submit(batch.f32, step);
    const StepResult ra = graphed->wait();
    eager->submit(batch.f32, step);
    const StepResult rb = eager->wait();
    EXPECT_NEAR(ra.d_loss, rb.d_loss, 1e-5 * std::abs(rb.d_loss)) << "step " << step;
    EXPECT_NEAR(ra.g_loss, rb.g_loss, 1e-5 * std::abs(rb.g_loss)) << "step " << step;
  }
  graphed->sync_to_host();
  eager->sync_to_host();
  // Different algorithms may also flip a near-zero gradient's sign: the same floor as against the CPU.
  const step_compare::Tolerance tol{1e-4, step_compare::optimizer_move_bound(a.opt_g->config(), kSteps + 2),
                                    c.flip_fraction};
  auto pa = a.G.named_params(), pb = b.G.named_params();
  for (size_t i = 0; i < pa.size(); ++i) {
    const Tensor &x = pa[i].param->value, &y = pb[i].param->value;
    const step_compare::Comparison r = step_compare::compare_trained(x.f32(), y.f32(), y.numel(), tol);
    EXPECT_TRUE(r.ok) << pa[i].name << ": " << r.detail();
  }
  auto da = a.D.named_buffers(), db = b.D.named_buffers();
  for (size_t i = 0; i < da.size(); ++i) {
    if (da[i].buffer->value.dtype() == DType::i64) {
      EXPECT_EQ(da[i].buffer->value.i64()[0], db[i].buffer->value.i64()[0]) << da[i].name;
    } else {
      EXPECT_LE(rel_diff(da[i].buffer->value, db[i].buffer->value), 1e-4) << da[i].name;
    }
  }
}

// The timing breakdown on the device: each step's phases timed by events on the stream, eager and
// replayed as CUDA graphs (the events are recorded between the graph segments), each named phase
// positive, and their sum within the host's time for the steps (the device ran them inside it).
TEST(GpuTrainingTiming, PhasesAreTimedByDeviceEventsEagerAndGraphed) {
  GT_REQUIRE_GPU();
  for (bool graph : {false, true}) {
    SCOPED_TRACE(graph ? "CUDA graphs" : "eager");
    Case c = cases()[0];
    c.graph = graph;
    HostModels h("adam");
    auto comm = make_local_communicator();
    auto engine = make_engine(options(c, "cuda"), h.m, *comm);
    double phases[kStepPhases] = {};
    for (int64_t step = 0; step < 2; ++step) {  // the first (eager, algorithm search) and the capture
      Batch batch = make_batch(step, false);
      engine->submit(batch.f32, step);
      engine->wait();
    }
    EXPECT_EQ(engine->take_phase_seconds(phases), PhaseClock::device);
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t step = 2; step < 6; ++step) {
      Batch batch = make_batch(step, false);
      engine->submit(batch.f32, step);
      engine->wait();
    }
    const double host_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_EQ(engine->take_phase_seconds(phases), PhaseClock::device);
    double named = 0;
    for (StepPhase p : {StepPhase::g_forward, StepPhase::d_forward_backward, StepPhase::g_backward,
                        StepPhase::optimizer}) {
      EXPECT_GT(phases[static_cast<int>(p)], 0.0) << kStepPhaseNames[static_cast<int>(p)];
      named += phases[static_cast<int>(p)];
    }
    EXPECT_EQ(phases[static_cast<int>(StepPhase::other)], 0.0);
    EXPECT_LE(named, host_s * 1.01 + 1e-5);  // event resolution is about 0.5 us
    // Taken: the next call starts from zero.
    engine->take_phase_seconds(phases);
    for (double v : phases) EXPECT_EQ(v, 0.0);
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, GpuTraining, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

}  // namespace
}  // namespace gt
