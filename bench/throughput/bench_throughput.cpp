// Training-step throughput of a StepEngine (--device cpu|cuda) on DCGAN: median step time, images/s, model FLOP utilization, CelebA epoch time; table + JSON.
//
//   bench_throughput [--device cuda] [--config config/dcgan_celeba64.yaml] [--batch 128,256,512,1024]
//                    [--precision fp32,tf32,bf16] [--layout auto] [--graph on] [--warmup 5] [--steps 20]
//                    [--peak-tflops bf16=989.4,...] [--commit REV] [--json FILE] [--flops-only]
//                    [--gp 10] [--micro 64]
//
// The model defaults to the reference run's (config/dcgan_celeba64.yaml: nz 100, widths 128, 64x64x3);
// --config reads another config's model section and --nz/--width/--resolution/... override it. Each
// (precision, batch) gets fresh host models and a fresh engine; the real batch is synthetic, drawn once.
// docs/performance.md explains the measurement and the FLOP count.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/rng.h"
#include "core/version.h"
#include "parallel/communicator.h"
#include "bench_util.h"
#include "model_flops.h"
#include "nn/dcgan.h"
#include "throughput_report.h"
#include "train/engine.h"
#include "train/optim.h"
#include "train/trainer.h"
#if GANTRAIN_HAVE_CUDA
#include "cuda/device.h"
#endif

namespace {

using namespace gt;
using namespace gt::bench;

// Dense tensor-core / FMA peaks of the H100 SXM datasheet (the H200 has the same), TFLOP/s.
const std::map<std::string, double> kH100Peaks = {{"fp32", 66.9}, {"tf32", 494.7}, {"bf16", 989.4}};

struct Options {
  std::string device = "cuda";
  std::string config_path;
  int nz = 0, width = 0, g_width = 0, d_width = 0, resolution = 0, channels = 0;  // 0: from the config
  std::string batches = "128,256,512,1024";
  std::string precisions;  // default: fp32,tf32,bf16 on cuda, fp32 on cpu
  std::string layout = "auto";
  std::string graph = "on";
  std::string deterministic = "on";
  int warmup = 5, steps = 20, threads = 0;
  uint64_t seed = 1234;
  std::string peak;  // "" = the H100 datasheet on cuda, none on cpu; "X" = X for every precision; "p=X,..."
  std::string commit, json_path;
  float gp = 0;          // > 0: WGAN-GP's step (critic loss, this penalty weight, a layer-norm critic, Adam (0, 0.9))
  int64_t micro = 0;     // > 0: micro-batches of this many images, accumulated (the large-batch plan)
  bool flops_only = false;
};

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

std::vector<int64_t> parse_batches(const std::string& text) {
  std::vector<int64_t> out;
  for (const std::string& b : split_list(text)) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(b, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != b.size() || v < 2) user_error("--batch: '{}' is not a batch size of at least 2 (give e.g. 128,256)", b);
    out.push_back(v);
  }
  if (out.empty()) user_error("--batch: no batch sizes in '{}'", text);
  return out;
}

std::vector<std::string> parse_precisions(const Options& o) {
  const std::string text = o.precisions.empty() ? (o.device == "cuda" ? "fp32,tf32,bf16" : "fp32") : o.precisions;
  std::vector<std::string> out = split_list(text);
  for (const std::string& p : out) {
    if (p != "fp32" && p != "tf32" && p != "bf16") user_error("--precision: '{}' is not one of fp32, tf32, bf16", p);
    if (o.device == "cpu" && p != "fp32")
      user_error("--precision {}: the CPU engine computes in fp32 only (tf32 and bf16 are --device cuda)", p);
  }
  if (out.empty()) user_error("--precision: no precisions in '{}'", text);
  return out;
}

// --peak-tflops: a number for every precision, or "bf16=989.4,tf32=494.7".
std::map<std::string, double> parse_peaks(const Options& o, std::string* source) {
  if (o.peak.empty()) {
    if (o.device == "cpu") {
      *source = "none for the CPU: pass --peak-tflops for an MFU column";
      return {};
    }
    *source = "H100 SXM datasheet, dense; pass --peak-tflops for another GPU";
    return kH100Peaks;
  }
  *source = "--peak-tflops " + o.peak;
  std::map<std::string, double> out;
  for (const std::string& item : split_list(o.peak)) {
    const size_t eq = item.find('=');
    const std::string key = eq == std::string::npos ? "" : item.substr(0, eq);
    const std::string value = eq == std::string::npos ? item : item.substr(eq + 1);
    double v = 0;
    try {
      v = std::stod(value);
    } catch (const std::exception&) {
      v = 0;
    }
    if (v <= 0) user_error("--peak-tflops: '{}' is not a positive TFLOP/s figure", item);
    if (key.empty()) {
      for (const char* p : {"fp32", "tf32", "bf16"}) out[p] = v;
    } else if (key == "fp32" || key == "tf32" || key == "bf16") {
      out[key] = v;
    } else {
      user_error("--peak-tflops: '{}' names no precision (fp32, tf32, bf16)", key);
    }
  }
  return out;
}

std::string on_off(const std::string& flag, const std::string& value) {
  if (value != "on" && value != "off") user_error("{}: '{}' is not on or off", flag, value);
  return value;
}

DcganSpec model_spec(const Options& o, float* init_std) {
  ModelConfig m;  // its defaults are the reference run's; a config file replaces them
  if (!o.config_path.empty()) m = load_config(o.config_path).model;
  if (m.arch != "dcgan") user_error("{}: model.arch '{}' is not dcgan", o.config_path, m.arch);
  DcganSpec s{.nz = m.nz, .g_width = m.g_width, .d_width = m.d_width, .resolution = m.resolution,
              .channels = m.channels, .leaky_slope = m.leaky_slope};
  if (o.nz) s.nz = o.nz;
  if (o.width) s.g_width = s.d_width = o.width;
  if (o.g_width) s.g_width = o.g_width;
  if (o.d_width) s.d_width = o.d_width;
  if (o.resolution) s.resolution = o.resolution;
  if (o.channels) s.channels = o.channels;
  if (s.resolution != 32 && s.resolution != 64 && s.resolution != 128)
    user_error("--resolution {} is not one of 32, 64, 128", s.resolution);
  *init_std = m.init_std;
  return s;
}

// G, D and their Adam optimizers on the host, as the trainer makes them; an engine copies them in.
struct HostModels {
  Sequential G, D;
  std::unique_ptr<Optimizer> opt_g, opt_d;
  HostModels(const DcganSpec& s, float init_std, uint64_t seed, bool penalty = false)
      : G(make_dcgan_generator(s)), D(make_dcgan_discriminator(s)) {
    dcgan_init(G, init_std, seed, 1);
    dcgan_init(D, init_std, seed, 2);
    OptimConfig adam;  // lr 2e-4, betas (0.5, 0.999): the DCGAN settings
    if (penalty) adam.lr = 1e-4, adam.beta1 = 0.0, adam.beta2 = 0.9;  // the WGAN-GP paper's
    opt_g = make_optimizer(adam, G.named_params());
    opt_d = make_optimizer(adam, D.named_params());
  }
  GanModels view() { return {&G, &D, opt_g.get(), opt_d.get()}; }
};

// A synthetic real batch in the engine's format: f32 NCHW in [-1, 1], or the stored u8 NHWC.
Tensor make_real_batch(StepEngine& engine, const DcganSpec& s, int64_t n, uint64_t seed) {
  const int64_t r = s.resolution, c = s.channels;
  std::vector<float> v(static_cast<size_t>(n * c * r * r));
  fill_uniform(v.data(), static_cast<int64_t>(v.size()), -1.f, 1.f, seed, RngStream::synthetic, 0);
  if (engine.wants_u8_batches()) {
    Tensor t = engine.make_batch_buffer({n, r, r, c}, DType::u8);
    for (size_t i = 0; i < v.size(); ++i) t.u8()[i] = static_cast<uint8_t>(std::lround((v[i] + 1.f) * 127.5f));
    return t;
  }
  Tensor t = engine.make_batch_buffer({n, c, r, r}, DType::f32);
  std::copy(v.begin(), v.end(), t.f32());
  return t;
}

ThroughputRow time_row(const Options& o, const DcganSpec& spec, float init_std, const std::string& precision,
                       int64_t batch, Communicator& comm) {
  ThroughputRow row;
  row.precision = precision;
  row.batch = batch;
  DcganSpec net_spec = spec;
  if (o.gp > 0) net_spec.d_norm = NormKind::layer;  // a penalty needs a critic without batch norm
  HostModels host(net_spec, init_std, o.seed, o.gp > 0);
  GanModels models = host.view();
  EngineOptions eo;
  if (o.gp > 0) eo.objective.kind = LossKind::wasserstein, eo.objective.gp_weight = o.gp;
  eo.micro_batch = o.micro;
  eo.device = o.device == "cuda" ? Device::cuda : Device::cpu;
  if (!parse_choice(precision, &eo.precision)) user_error("--precision {}: expected fp32, tf32 or bf16", precision);
  if (!parse_choice(o.layout, &eo.layout)) user_error("--layout {}: expected auto, nchw or nhwc", o.layout);
  eo.cuda_graph = o.graph == "on";
  eo.deterministic = o.deterministic == "on";
  eo.global_batch = eo.local_batch = batch;
  eo.seed = o.seed;
  eo.nz = spec.nz;
  std::unique_ptr<StepEngine> engine = make_engine(eo, models, comm);
  row.engine = engine->describe();
  const Tensor real = make_real_batch(*engine, spec, batch, o.seed);
  for (int step = 0; step < o.warmup + o.steps; ++step) {
    const auto start = std::chrono::steady_clock::now();
    engine->submit(real, step);
    const StepResult r = engine->wait();
    const auto stop = std::chrono::steady_clock::now();
    // A step that produced NaNs may have skipped work: its time would flatter the engine.
    if (!std::isfinite(r.d_loss) || !std::isfinite(r.g_loss))
      runtime_error("step {} gave non-finite losses (D {}, G {})", step, r.d_loss, r.g_loss);
    if (step >= o.warmup) row.ms.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
    row.last_d_loss = r.d_loss;
    row.last_g_loss = r.g_loss;
  }
  row.device_bytes = engine->device_bytes();
  return row;
}

// The GPU's name, or a UserError saying why --device cuda cannot run here.
std::string cuda_device_name() {
#if GANTRAIN_HAVE_CUDA
  const gt::cuda::DeviceReport dev = gt::cuda::query_devices();
  if (dev.count == 0) user_error("--device cuda: no usable CUDA device on this machine ({})", dev.reason);
  return fmt::format("{} (sm_{}{})", dev.name, dev.cc_major, dev.cc_minor);
#else
  user_error("--device cuda: this bench_throughput was built without CUDA (GANTRAIN_CUDA=OFF, or no nvcc at "
             "configure time); rebuild with the CUDA toolkit or run --device cpu");
#endif
}

int run(const Options& o) {
  if (o.device != "cpu" && o.device != "cuda") user_error("--device '{}' is not one of cpu, cuda", o.device);
  // No GPU (or a build without CUDA) is said first, before the model is even made.
  const std::string device_name =
      o.flops_only ? "none (--flops-only)" : (o.device == "cuda" ? cuda_device_name() : cpu_model());
  float init_std = 0.02f;
  const DcganSpec spec = model_spec(o, &init_std);
  const std::vector<int64_t> batches = parse_batches(o.batches);
  const std::vector<std::string> precisions = parse_precisions(o);

  ThroughputReport rep;
  rep.date_utc = utc_now();
  rep.host = host_name();
  rep.device_kind = o.device;
  rep.commit = o.commit.empty() ? gt::git_revision() : o.commit;
  rep.version = gt::version();
  rep.model = {spec.nz, spec.g_width, spec.d_width, spec.resolution, spec.channels};
  rep.layout = o.layout;
  rep.graph = on_off("--graph", o.graph);
  rep.deterministic = on_off("--deterministic", o.deterministic);
  rep.warmup = o.warmup;
  rep.steps = o.steps;
  rep.seed = o.seed;
  rep.peak_tflops = parse_peaks(o, &rep.peak_source);
  rep.gp_weight = o.gp;
  rep.micro_batch = o.micro;
  if (o.gp > 0) {
    rep.loss = fmt::format("WGAN-GP: -D(x) + D(G(z)) + {} (||grad D(x_hat)|| - 1)^2, layer-norm critic", o.gp);
    rep.optimizer = "adam lr 1e-4 betas (0, 0.9)";
  }
  for (int64_t b : batches)
    if (o.micro > 0 && b % o.micro != 0) user_error("--micro {} does not divide --batch {}", o.micro, b);
  {
    HostModels shapes(spec, init_std, o.seed);
    for (int64_t b : batches)
      rep.flops.push_back(dcgan_step_flops(shapes.G, shapes.D, b, spec.nz, spec.channels, spec.resolution));
  }
  if (o.flops_only) {
    rep.device_kind = "none";
    rep.device_name = device_name;
    print_flops(rep);
    if (!o.json_path.empty()) write_json(rep, o.json_path, true);
    return 0;
  }
  rep.device_name = device_name;
  rep.threads = o.device == "cpu" ? set_cpu_threads(o.threads) : 0;
  print_flops(rep);

  auto comm = make_local_communicator();
  bool all_ok = true;
  for (const std::string& p : precisions) {
    for (size_t i = 0; i < batches.size(); ++i) {
      ThroughputRow row;
      try {
        row = time_row(o, spec, init_std, p, batches[i], *comm);
      } catch (const std::exception& e) {  // out of memory, a precision not implemented: record it, go on
        row = ThroughputRow{};
        row.precision = p;
        row.batch = batches[i];
        row.error = e.what();
        all_ok = false;
      }
      row.step_flops = rep.flops[i].step_flops;
      if (row.error.empty())
        std::printf("%s batch %lld: %.3f ms/step, %.0f images/s  [%s]\n", p.c_str(),
                    static_cast<long long>(row.batch), row.median_ms(), row.images_per_s(), row.engine.c_str());
      else
        std::printf("%s batch %lld: failed: %s\n", p.c_str(), static_cast<long long>(row.batch), row.error.c_str());
      std::fflush(stdout);
      rep.rows.push_back(std::move(row));
      // After every row: a run stopped by a time limit (gpu_check.sh --perf) still leaves the rows it timed.
      if (!o.json_path.empty()) write_json(rep, o.json_path, false);
    }
  }
  print_table(rep);
  if (!o.json_path.empty()) write_json(rep, o.json_path, false);
  return all_ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Times full DCGAN training steps through the step engine (CPU or CUDA): images/s, MFU, CelebA time."};
  app.add_option("--device", o.device, "engine: cpu or cuda")->capture_default_str();
  app.add_option("--config", o.config_path, "take the model from this YAML config (default: the reference run's)");
  app.add_option("--nz", o.nz, "noise dimension (overrides the config)")->check(CLI::PositiveNumber);
  app.add_option("--width", o.width, "G and D width (ngf = ndf; overrides the config)")->check(CLI::PositiveNumber);
  app.add_option("--g-width", o.g_width, "generator width ngf")->check(CLI::PositiveNumber);
  app.add_option("--d-width", o.d_width, "discriminator width ndf")->check(CLI::PositiveNumber);
  app.add_option("--resolution", o.resolution, "image size: 32, 64 or 128");
  app.add_option("--channels", o.channels, "image channels")->check(CLI::Range(1, 4));
  app.add_option("--batch", o.batches, "comma-separated batch sizes")->capture_default_str();
  app.add_option("--precision", o.precisions, "comma-separated: fp32, tf32, bf16 (default all on cuda, fp32 on cpu)");
  app.add_option("--layout", o.layout, "cuda activations: auto, nchw, nhwc")->capture_default_str();
  app.add_option("--graph", o.graph, "cuda: capture the step as a CUDA graph, on or off")->capture_default_str();
  app.add_option("--deterministic", o.deterministic, "cuda: deterministic cuDNN algorithms only, on or off")
      ->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed steps first")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--steps", o.steps, "timed steps")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--threads", o.threads, "cpu: threads, 0 = all cores")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of weights, batch and noise")->capture_default_str();
  app.add_option("--peak-tflops", o.peak,
                 "peak for MFU: one TFLOP/s figure, or per precision 'bf16=989.4,tf32=494.7,fp32=66.9' "
                 "(default on cuda: those, the H100 SXM dense datasheet figures)");
  app.add_option("--commit", o.commit, "revision to record (default: the one compiled in)");
  app.add_option("--json", o.json_path, "write every figure to this JSON file");
  app.add_flag("--flops-only", o.flops_only, "print the model FLOP count per batch and exit (no engine, no device)");
  app.add_option("--gp", o.gp, "time WGAN-GP's step with this penalty weight (layer-norm critic, Adam (0, 0.9)); no MFU")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--micro", o.micro, "micro-batches of this many images, accumulated per update; no MFU")
      ->check(CLI::NonNegativeNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // usage errors exit 2, as every gantrain program's do
  }
  try {
    return run(o);
  } catch (const gt::UserError& e) {
    std::fprintf(stderr, "bench_throughput: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_throughput: error: %s\n", e.what());
    return 1;
  }
}
