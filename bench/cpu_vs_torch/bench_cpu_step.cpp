// Times the full DCGAN training step (dcgan_train_step with Adam) on the CPU backend: warm-up, then the median of N steps; prints a table and writes JSON.
//
//   bench_cpu_step [--resolution 32] [--channels 1] [--nz 64] [--g-width 32] [--d-width 32] [--batch 128]
//                  [--threads 0] [--warmup 3] [--steps 10] [--json FILE]
//
// The defaults are the demo config. bench/cpu_vs_torch/torch_step.py times the same step in PyTorch;
// bench/cpu_vs_torch/run.sh runs both with the same thread count and writes bench/results/.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/version.h"
#include "nn/dcgan.h"
#include "train/cpu_step.h"
#include "train/optim.h"
#include "train/trainer.h"

namespace {

using namespace gt;

struct BenchOptions {
  DcganSpec spec{.nz = 64, .g_width = 32, .d_width = 32, .resolution = 32, .channels = 1};
  int batch = 128;
  int threads = 0;  // 0 = all cores
  int warmup = 3;
  int steps = 10;
  uint64_t seed = 1;
  std::string json_path;
};

struct Timings {
  std::vector<double> ms;  // one entry per timed step, in order
  double median() const {
    std::vector<double> s = ms;
    std::sort(s.begin(), s.end());
    const size_t n = s.size();
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
  }
  double min() const { return *std::min_element(ms.begin(), ms.end()); }
  double max() const { return *std::max_element(ms.begin(), ms.end()); }
};

// The batch of real images is drawn once; the noise is drawn per step (outside the timed region), as in training.
Timings time_steps(const BenchOptions& o) {
  Sequential G = make_dcgan_generator(o.spec);
  Sequential D = make_dcgan_discriminator(o.spec);
  dcgan_init(G, 0.02f, o.seed, 1);
  dcgan_init(D, 0.02f, o.seed, 2);
  OptimConfig adam;  // the DCGAN defaults: lr 2e-4, betas (0.5, 0.999)
  auto opt_g = make_optimizer(adam, G.named_params());
  auto opt_d = make_optimizer(adam, D.named_params());
  GanModels models{&G, &D, opt_g.get(), opt_d.get()};

  Tensor real({o.batch, o.spec.channels, o.spec.resolution, o.spec.resolution});
  fill_uniform(real.f32(), real.numel(), -1.f, 1.f, o.seed, RngStream::synthetic, 0);
  Tensor z({o.batch, o.spec.nz});

  Timings t;
  for (int step = 0; step < o.warmup + o.steps; ++step) {
    fill_noise(z.f32(), o.batch, o.spec.nz, o.seed, static_cast<uint64_t>(step), 0);
    const auto start = std::chrono::steady_clock::now();
    StepResult r = dcgan_train_step(models, real, z, StepOptions{});
    const auto stop = std::chrono::steady_clock::now();
    GT_CHECK(std::isfinite(r.d_loss) && std::isfinite(r.g_loss), "step {} gave non-finite losses", step);
    if (step >= o.warmup) t.ms.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
  }
  return t;
}

std::string config_label(const BenchOptions& o) {
  return fmt::format("dcgan r{} c{} nz{} g{} d{} b{}", o.spec.resolution, o.spec.channels, o.spec.nz,
                     o.spec.g_width, o.spec.d_width, o.batch);
}

void print_table(const BenchOptions& o, int threads, const Timings& t) {
  std::printf("# gantrain CPU: one DCGAN training step (G forward, D step on real+fake, G step; Adam)\n");
  std::printf("# warm-up %d steps, then %d timed steps; images/s from the median\n", o.warmup, o.steps);
  std::printf("%-34s %8s %10s %10s %10s %10s\n", "config", "threads", "median ms", "min ms", "max ms", "images/s");
  std::printf("%-34s %8d %10.2f %10.2f %10.2f %10.1f\n", config_label(o).c_str(), threads, t.median(), t.min(),
              t.max(), o.batch / (t.median() / 1000.0));
}

void write_json(const BenchOptions& o, int threads, const Timings& t) {
  nlohmann::json j;
  j["benchmark"] = "dcgan_train_step";
  j["backend"] = "gantrain-cpu";
  j["version"] = gt::version();
  j["git_rev"] = gt::git_revision();
  j["config"] = {{"resolution", o.spec.resolution}, {"channels", o.spec.channels}, {"nz", o.spec.nz},
                 {"g_width", o.spec.g_width},       {"d_width", o.spec.d_width},   {"batch", o.batch},
                 {"optimizer", "adam"},             {"label", config_label(o)}};
  j["threads"] = threads;
  j["warmup_steps"] = o.warmup;
  j["timed_steps"] = o.steps;
  j["ms_per_step"] = {{"median", t.median()}, {"min", t.min()}, {"max", t.max()}, {"all", t.ms}};
  j["images_per_second"] = o.batch / (t.median() / 1000.0);
  std::ofstream out(o.json_path);
  if (!out) user_error("cannot write the JSON output file {}", o.json_path);
  out << j.dump(2) << '\n';
}

int run(const BenchOptions& o) {
  const int threads = set_cpu_threads(o.threads);
  const Timings t = time_steps(o);
  print_table(o, threads, t);
  if (!o.json_path.empty()) write_json(o, threads, t);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  BenchOptions o;
  CLI::App app{"Times one full DCGAN training step on the gantrain CPU backend."};
  app.add_option("--resolution", o.spec.resolution, "image size: 32, 64 or 128")->capture_default_str();
  app.add_option("--channels", o.spec.channels, "image channels")->capture_default_str()->check(CLI::Range(1, 4));
  app.add_option("--nz", o.spec.nz, "noise dimension")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--g-width", o.spec.g_width, "generator width (ngf)")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--d-width", o.spec.d_width, "discriminator width (ndf)")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--batch", o.batch, "batch size")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  app.add_option("--threads", o.threads, "CPU threads, 0 = all cores")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--warmup", o.warmup, "untimed steps first")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--steps", o.steps, "timed steps")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--seed", o.seed, "seed of weights, batch and noise")->capture_default_str();
  app.add_option("--json", o.json_path, "write the figures to this JSON file");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // usage errors exit 2, as every gantrain program's do
  }
  try {
    return run(o);
  } catch (const gt::UserError& e) {
    std::fprintf(stderr, "bench_cpu_step: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cpu_step: error: %s\n", e.what());
    return 1;
  }
}
