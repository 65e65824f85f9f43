// Progressive GAN phase throughput: one training step of each phase of a progan config (CPU or CUDA engine), its FLOPs, and the phase and run wall time they imply; table + JSON.
//
//   bench_progan [--config config/progan_food101_256.yaml] [--device cpu|cuda] [--precision tf32]
//                [--phases all|0,3,12] [--batch N] [--fmap-base N --fmap-max N] [--warmup 2] [--steps 5]
//                [--threads 0] [--json FILE] [--commit REV]
//
// Each phase gets the models a run has in it (make_progan_models), the engine a run makes for it, the phase's
// batch (or --batch) split into the micro-batches of the large-batch plan on one rank, and synthetic real images
// at the phase's resolution; a transition runs at alpha 0.5. The step time times the phase's steps is the phase's
// wall time on this device; their sum is the run's (docs/performance.md, "Progressive GAN"). --fmap-base and
// --fmap-max shrink the widths for a CPU that cannot run the full model in reasonable time (the table says so).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/rng.h"
#include "core/version.h"
#include "bench_util.h"
#include "model_flops.h"
#include "nn/progan.h"
#include "parallel/communicator.h"
#include "train/engine.h"
#include "train/large_batch.h"
#include "train/progressive.h"
#include "train/run_setup.h"
#include "train/trainer.h"
#if GANTRAIN_HAVE_CUDA
#include "cuda/device.h"
#endif

namespace {

using namespace gt;

struct Options {
  std::string config_path = "config/progan_food101_256.yaml";
  std::string device = "cpu", precision = "tf32", phases = "all", json_path, commit;
  int64_t batch = 0;
  int fmap_base = 0, fmap_max = 0, warmup = 2, steps = 5, threads = 0;
  bool flops_only = false;  // count each phase's FLOPs at its batch; no engine, no timing
};

struct PhaseRow {
  ProganPhase phase;
  int64_t batch = 0, micro = 0, accumulation = 1;
  int64_t g_params = 0, d_params = 0;
  double step_flops = 0;  // model FLOPs of one step at this batch
  std::vector<double> ms;
  bool timed() const { return !ms.empty(); }
  double median_ms() const {
    std::vector<double> v = ms;
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
  }
  // The phase's steps at the phase's own batch: the step time scales with the batch from the one timed.
  double phase_seconds() const {
    return median_ms() / 1000.0 * static_cast<double>(phase.batch) / static_cast<double>(batch) * phase.steps;
  }
};

// FLOPs of one step: the DCGAN count (bench/throughput/model_flops.h) plus, with a gradient penalty, about five D
// forwards (the forward on the interpolates, the input-gradient backward, the tangents, the double backward's
// weight and data gradients).
double step_flops(Sequential& G, Sequential& D, const ProganSpec& spec, int r, int64_t batch, bool penalty) {
  const bench::NetMacs g = bench::count_net_macs(G, {batch, spec.nz, 1, 1});
  const bench::NetMacs d = bench::count_net_macs(D, {batch, spec.channels, r, r});
  double macs = 3.0 * g.forward - g.first + 8.0 * d.forward - 2.0 * d.first;
  if (penalty) macs += 5.0 * d.forward;
  return 2.0 * macs;
}

PhaseRow time_phase(const Options& o, const Config& cfg, const ProganSpec& spec, const ProganPhase& phase,
                    Communicator& comm) {
  PhaseRow row;
  row.phase = phase;
  row.batch = o.batch > 0 ? o.batch : phase.batch;
  std::unique_ptr<Models> m = make_progan_models(cfg, spec, phase);
  row.g_params = m->G.param_count();
  row.d_params = m->D.param_count();
  const GanObjective objective = gan_objective(cfg);
  row.step_flops = step_flops(m->G, m->D, spec, phase.resolution, row.batch, objective.gp_weight > 0);
  if (o.flops_only) return row;
  const double per_image = step_bytes_per_image(m->G, m->D, spec.nz, objective);
  double budget = cfg.train.memory_mb * 1048576.0;
#if GANTRAIN_HAVE_CUDA
  if (o.device == "cuda" && budget == 0 && cfg.train.micro_batch == 0)
    budget = 0.8 * static_cast<double>(cuda::free_memory_bytes());
#endif
  const LargeBatchPlan plan =
      plan_large_batch(row.batch, 1, cfg.train.micro_batch, budget, per_image, "the budget", spec.mbstd_group);
  row.micro = plan.micro_batch;
  row.accumulation = plan.accumulation;
  GanModels host = m->view();
  EngineOptions eo;
  eo.device = o.device == "cuda" ? Device::cuda : Device::cpu;
  if (!parse_choice(o.precision, &eo.precision)) user_error("--precision {}: expected fp32, tf32 or bf16", o.precision);
  eo.global_batch = eo.local_batch = row.batch;
  eo.micro_batch = plan.micro_batch;
  eo.seed = static_cast<uint64_t>(cfg.run.seed);
  eo.nz = spec.nz;
  eo.objective = objective;
  std::unique_ptr<StepEngine> engine = make_engine(eo, host, comm);
  engine->set_fade_alpha(phase.fading ? 0.5f : 1.f);
  std::vector<Tensor> reals;
  for (int k = 0; k < objective.n_critic; ++k) {
    Tensor t = engine->make_batch_buffer({row.batch, spec.channels, phase.resolution, phase.resolution}, DType::f32);
    fill_uniform(t.f32(), t.numel(), -1.f, 1.f, eo.seed + static_cast<uint64_t>(k), RngStream::synthetic, 0);
    reals.push_back(t);
  }
  for (int step = 0; step < o.warmup + o.steps; ++step) {
    const auto start = std::chrono::steady_clock::now();
    engine->submit(reals, step);
    const StepResult r = engine->wait();
    const auto stop = std::chrono::steady_clock::now();
    if (!std::isfinite(r.d_loss) || !std::isfinite(r.g_loss))
      runtime_error("{}: step {} gave non-finite losses (D {}, G {})", phase.name(), step, r.d_loss, r.g_loss);
    if (step >= o.warmup) row.ms.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
  }
  return row;
}

std::string device_name(const Options& o) {
  if (o.device == "cpu") return bench::cpu_model();
#if GANTRAIN_HAVE_CUDA
  const cuda::DeviceReport dev = cuda::query_devices();
  if (dev.count == 0) user_error("--device cuda: no usable CUDA device on this machine ({})", dev.reason);
  return dev.name;
#else
  user_error("--device cuda: this bench_progan was built without CUDA");
#endif
}

int run(const Options& o) {
  if (o.device != "cpu" && o.device != "cuda") user_error("--device '{}' is not one of cpu, cuda", o.device);
  const std::string device = o.flops_only ? "none (--flops-only)" : device_name(o);
  Config cfg = load_config(o.config_path);
  if (cfg.model.arch != "progan") user_error("{}: model.arch is '{}', not progan", o.config_path, cfg.model.arch);
  const bool reduced = o.fmap_base > 0 || o.fmap_max > 0;
  if (o.fmap_base > 0) cfg.model.fmap_base = o.fmap_base;
  if (o.fmap_max > 0) cfg.model.fmap_max = o.fmap_max;
  const ProganSpec spec = progan_spec(cfg.model);
  const ProganSchedule schedule = progan_schedule(cfg);
  const std::vector<int> which = bench::parse_phases(o.phases, schedule.phases.size());
  const int threads = o.device == "cpu" ? set_cpu_threads(o.threads) : 0;
  auto comm = make_local_communicator();

  std::printf("bench_progan: %s on %s%s | %s | widths min(%d / r, %d)%s | %d warmup + %d timed steps per phase\n",
              o.config_path.c_str(), o.device.c_str(), threads ? fmt::format(" ({} threads)", threads).c_str() : "",
              device.c_str(), spec.fmap_base, spec.fmap_max, reduced ? " (reduced from the config)" : "", o.warmup,
              o.steps);
  std::printf("%5s  %-18s %6s %10s %10s %12s %12s %11s %10s %12s\n", "phase", "resolution", "batch", "micro",
              "ms/step", "images/s", "GFLOP/step", "GFLOP/s", "steps", "phase time");
  std::vector<PhaseRow> rows;
  double total_s = 0;
  for (int i : which) {
    PhaseRow row = time_phase(o, cfg, spec, schedule.phases[static_cast<size_t>(i)], *comm);
    const double ms = row.median_ms();
    if (row.timed())
      std::printf("%5d  %-18s %6lld %10s %10.2f %12.1f %12.2f %11.1f %10lld %11.0fs\n", i, row.phase.name().c_str(),
                  static_cast<long long>(row.batch),
                  fmt::format("{} x {}", row.accumulation, row.micro).c_str(), ms, row.batch / (ms / 1000.0),
                  row.step_flops / 1e9, row.step_flops / 1e9 / (ms / 1000.0), static_cast<long long>(row.phase.steps),
                  row.phase_seconds());
    else
      std::printf("%5d  %-18s %6lld %10s %10s %12s %12.2f %11s %10lld %12s\n", i, row.phase.name().c_str(),
                  static_cast<long long>(row.batch), "-", "-", "-", row.step_flops / 1e9, "-",
                  static_cast<long long>(row.phase.steps), "-");
    std::fflush(stdout);
    total_s += row.phase_seconds();
    rows.push_back(std::move(row));
  }
  double run_flops = 0;
  for (const PhaseRow& r : rows)
    run_flops += r.step_flops * static_cast<double>(r.phase.batch) / static_cast<double>(r.batch) * r.phase.steps;
  std::printf("model FLOPs of the %zu phase(s) at their batches: %.4g PFLOP\n", rows.size(), run_flops / 1e15);
  if (!o.flops_only)
    std::printf("the %zu phase(s) timed: %.0f s (%.2f h) of training on this device%s\n", rows.size(), total_s,
                total_s / 3600.0, o.batch > 0 ? " (scaled from --batch to each phase's batch)" : "");
  if (!o.json_path.empty()) {
    std::ofstream f(o.json_path);
    f << "{\n  \"benchmark\": \"bench_progan\",\n  \"date_utc\": \"" << bench::utc_now() << "\",\n  \"commit\": \""
      << (o.commit.empty() ? git_revision() : o.commit) << "\",\n  \"config\": \"" << o.config_path
      << "\",\n  \"device\": \"" << o.device << "\",\n  \"device_name\": \"" << device << "\",\n  \"threads\": " << threads
      << ",\n  \"precision\": \"" << (o.device == "cuda" ? o.precision : "fp32") << "\",\n  \"fmap_base\": "
      << spec.fmap_base << ",\n  \"fmap_max\": " << spec.fmap_max << ",\n  \"reduced_widths\": "
      << (reduced ? "true" : "false") << ",\n  \"steps_timed\": " << o.steps << ",\n  \"phases\": [\n";
    for (size_t k = 0; k < rows.size(); ++k) {
      const PhaseRow& r = rows[k];
      f << fmt::format(
          "    {{\"index\": {}, \"name\": \"{}\", \"resolution\": {}, \"fading\": {}, \"phase_batch\": {}, "
          "\"batch\": {}, \"micro_batch\": {}, \"accumulation\": {}, \"g_params\": {}, \"d_params\": {}, "
          "\"step_flops\": {:.6g}, \"median_ms\": {:.4f}, \"phase_steps\": {}, \"phase_seconds\": {:.2f}}}{}\n",
          r.phase.index, r.phase.name(), r.phase.resolution, r.phase.fading ? "true" : "false", r.phase.batch, r.batch,
          r.micro, r.accumulation, r.g_params, r.d_params, r.step_flops, r.median_ms(), r.phase.steps,
          r.phase_seconds(), k + 1 < rows.size() ? "," : "");
    }
    f << "  ],\n  \"run_flops\": " << fmt::format("{:.6g}", run_flops) << ",\n  \"flops_only\": "
      << (o.flops_only ? "true" : "false") << ",\n  \"total_seconds\": " << fmt::format("{:.1f}", total_s) << "\n}\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Times one training step of each Progressive GAN phase and the run's wall time it implies."};
  app.add_option("--config", o.config_path, "a progan config")->capture_default_str();
  app.add_option("--device", o.device, "engine: cpu or cuda")->capture_default_str();
  app.add_option("--precision", o.precision, "cuda: fp32, tf32 or bf16")->capture_default_str();
  app.add_option("--phases", o.phases, "'all' or phase numbers, e.g. 0,4,12")->capture_default_str();
  app.add_option("--batch", o.batch, "time every phase at this batch (its phase time is scaled to the phase's batch)")
      ->check(CLI::PositiveNumber);
  app.add_option("--fmap-base", o.fmap_base, "override model.fmap_base (reduced widths)")->check(CLI::PositiveNumber);
  app.add_option("--fmap-max", o.fmap_max, "override model.fmap_max (reduced widths)")->check(CLI::PositiveNumber);
  app.add_option("--warmup", o.warmup, "untimed steps per phase")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--steps", o.steps, "timed steps per phase")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--threads", o.threads, "cpu: threads, 0 = all cores")->capture_default_str();
  app.add_option("--json", o.json_path, "write the figures to this JSON file");
  app.add_option("--commit", o.commit, "revision to record (default: the one compiled in)");
  app.add_flag("--flops-only", o.flops_only, "count each phase's model FLOPs at its batch; no engine, no timing");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    return run(o);
  } catch (const UserError& e) {
    std::fprintf(stderr, "bench_progan: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_progan: error: %s\n", e.what());
    return 1;
  }
}
