// Times the CPU layers on the demo DCGAN (32x32x1, nz 64, ngf=ndf=32): ms per layer and images/s of a D+G step.
#include <cblas.h>
#include <omp.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "nn/sequential.h"

namespace {

// Milliseconds on the chosen clock (see Options::clock).
class Stopwatch {
 public:
  explicit Stopwatch(bool cpu) : cpu_(cpu), start_(now()) {}
  double ms() const { return now() - start_; }

 private:
  double now() const {
    if (!cpu_) {
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
    }
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
  }
  bool cpu_;
  double start_;
};

struct Options {
  int batch = 128;
  int iters = 10;
  int warmup = 2;
  std::string json;  // write results here when set
  // wall: elapsed time. cpu: this process's CPU time, for a single-threaded run on a busy shared machine
  // (time spent waiting for a core is not counted).
  std::string clock = "wall";
};

constexpr int kNz = 64, kWidth = 32, kImage = 32, kChannels = 1;

gt::Sequential make_generator() {
  gt::Sequential g;
  const int w = kWidth;
  g.add(gt::make_conv_transpose2d({kNz, w * 4, 4, 1, 0, false}));
  g.add(gt::make_batchnorm2d(w * 4));
  g.add(gt::make_relu());
  g.add(gt::make_conv_transpose2d({w * 4, w * 2, 4, 2, 1, false}));
  g.add(gt::make_batchnorm2d(w * 2));
  g.add(gt::make_relu());
  g.add(gt::make_conv_transpose2d({w * 2, w, 4, 2, 1, false}));
  g.add(gt::make_batchnorm2d(w));
  g.add(gt::make_relu());
  g.add(gt::make_conv_transpose2d({w, kChannels, 4, 2, 1, false}));
  g.add(gt::make_tanh());
  return g;
}

gt::Sequential make_discriminator() {
  gt::Sequential d;
  const int w = kWidth;
  d.add(gt::make_conv2d({kChannels, w, 4, 2, 1, false}));
  d.add(gt::make_leaky_relu(0.2f));
  d.add(gt::make_conv2d({w, w * 2, 4, 2, 1, false}));
  d.add(gt::make_batchnorm2d(w * 2));
  d.add(gt::make_leaky_relu(0.2f));
  d.add(gt::make_conv2d({w * 2, w * 4, 4, 2, 1, false}));
  d.add(gt::make_batchnorm2d(w * 4));
  d.add(gt::make_leaky_relu(0.2f));
  d.add(gt::make_conv2d({w * 4, 1, 4, 1, 0, false}));
  return d;
}

gt::Tensor random_tensor(gt::Shape shape, std::mt19937& rng, float mean, float std) {
  gt::Tensor t(std::move(shape));
  std::normal_distribution<float> dist(mean, std);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = dist(rng);
  return t;
}

// DCGAN's weights_init: conv N(0, 0.02), batch-norm weight N(1, 0.02), bias 0.
void init_dcgan(gt::Sequential& net, std::mt19937& rng) {
  for (auto& np : net.named_params()) {
    const bool bn_weight = np.param->value.ndim() == 1 && np.name.ends_with(".weight");
    if (np.name.ends_with(".bias")) continue;
    np.param->value.copy_from(random_tensor(np.param->value.shape(), rng, bn_weight ? 1.f : 0.f, 0.02f));
  }
}

struct LayerTimes {
  std::string net, kind, shape;
  double forward_ms = 0, backward_ms = 0;
};

// Runs forward then backward layer by layer and adds each layer's time; returns the input gradient.
gt::Tensor timed_pass(gt::Sequential& net, const gt::Tensor& x, const gt::Tensor& dy, std::vector<LayerTimes>& t,
                      bool record, bool cpu_clock) {
  gt::Tensor h = x;
  for (size_t i = 0; i < net.size(); ++i) {
    Stopwatch watch(cpu_clock);
    h = net.layer(i).forward(h, gt::Mode::train);
    if (record) t[i].forward_ms += watch.ms();
  }
  gt::Tensor g = dy;
  for (size_t i = net.size(); i-- > 0;) {
    Stopwatch watch(cpu_clock);
    g = net.layer(i).backward(g);
    if (record) t[i].backward_ms += watch.ms();
  }
  return g;
}

std::vector<LayerTimes> time_layers(const char* name, gt::Sequential& net, const gt::Tensor& x, std::mt19937& rng,
                                    const Options& o) {
  std::vector<LayerTimes> t(net.size());
  gt::Shape s = x.shape();
  for (size_t i = 0; i < net.size(); ++i) {
    s = net.layer(i).output_shape(s);
    t[i] = {name, net.layer(i).kind(), gt::shape_str(s)};
  }
  gt::Tensor dy = random_tensor(s, rng, 0.f, 1.f / o.batch);
  for (int it = 0; it < o.warmup + o.iters; ++it) timed_pass(net, x, dy, t, it >= o.warmup, o.clock == "cpu");
  for (auto& l : t) {
    l.forward_ms /= o.iters;
    l.backward_ms /= o.iters;
  }
  return t;
}

// One training step's worth of layer work, as PyTorch's DCGAN example does it: G forward; D forward and
// backward on the real batch and on the fakes (D step); D forward and backward on the fakes again and
// G backward (G step). Losses and the optimizer are left out: they are O(batch) and O(params).
double time_step(gt::Sequential& g, gt::Sequential& d, const gt::Tensor& z, const gt::Tensor& real,
                 const gt::Tensor& dlogits, bool cpu_clock) {
  Stopwatch watch(cpu_clock);
  gt::Tensor fake = g.forward(z, gt::Mode::train);
  d.forward(real, gt::Mode::train);
  d.backward(dlogits);
  d.forward(fake, gt::Mode::train);
  d.backward(dlogits);
  d.forward(fake, gt::Mode::train);
  gt::Tensor dfake = d.backward(dlogits);
  g.backward(dfake);
  return watch.ms();
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Times the CPU layers of the demo DCGAN (32x32x1, nz 64, ngf = ndf = 32) one by one, and the layer "
               "work of a whole D+G step."};
  app.add_option("--batch", o.batch, "batch size")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  app.add_option("--iters", o.iters, "timed iterations")->capture_default_str()->check(CLI::Range(1, 1000000));
  app.add_option("--warmup", o.warmup, "untimed iterations first")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000000));
  app.add_option("--clock", o.clock,
                 "wall: elapsed time; cpu: this process's CPU time (single-threaded runs on a busy machine)")
      ->capture_default_str()
      ->check(CLI::IsMember({"wall", "cpu"}));
  app.add_option("--json", o.json, "write the figures to this JSON file");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  std::mt19937 rng(1234);
  gt::Sequential g = make_generator(), d = make_discriminator();
  init_dcgan(g, rng);
  init_dcgan(d, rng);
  gt::Tensor z = random_tensor({o.batch, kNz, 1, 1}, rng, 0.f, 1.f);
  gt::Tensor real = random_tensor({o.batch, kChannels, kImage, kImage}, rng, 0.f, 0.5f);
  gt::Tensor dlogits = random_tensor({o.batch, 1, 1, 1}, rng, 0.f, 1.f / o.batch);

  std::printf("# bench_cpu_layers: DCGAN %dx%dx%d, nz %d, ngf=ndf=%d, batch %d; %d OpenMP threads (GEMMs are split "
              "over them, OpenBLAS runs single-threaded inside)\n",
              kImage, kImage, kChannels, kNz, kWidth, o.batch, omp_get_max_threads());
  std::printf("# %d timed iterations after %d warm-up; %s-clock ms, means per call\n", o.iters, o.warmup,
              o.clock.c_str());

  std::vector<LayerTimes> layers = time_layers("G", g, z, rng, o);
  for (const LayerTimes& l : time_layers("D", d, real, rng, o)) layers.push_back(l);
  std::printf("#%4s %4s  %-16s %-18s %9s %9s\n", "net", "idx", "layer", "output", "fwd_ms", "bwd_ms");
  double total[2][2] = {{0, 0}, {0, 0}};
  for (size_t i = 0, idx = 0; i < layers.size(); ++i, ++idx) {
    const LayerTimes& l = layers[i];
    if (i > 0 && l.net != layers[i - 1].net) idx = 0;
    std::printf(" %4s %4zu  %-16s %-18s %9.3f %9.3f\n", l.net.c_str(), idx, l.kind.c_str(), l.shape.c_str(),
                l.forward_ms, l.backward_ms);
    total[l.net == "D"][0] += l.forward_ms;
    total[l.net == "D"][1] += l.backward_ms;
  }
  std::printf("# G total: fwd %.3f ms, bwd %.3f ms; D total: fwd %.3f ms, bwd %.3f ms\n", total[0][0], total[0][1],
              total[1][0], total[1][1]);

  std::vector<double> steps;
  for (int it = 0; it < o.warmup + o.iters; ++it) {
    const double ms = time_step(g, d, z, real, dlogits, o.clock == "cpu");
    if (it >= o.warmup) steps.push_back(ms);
  }
  std::sort(steps.begin(), steps.end());
  const double median = steps[steps.size() / 2];
  std::printf("# step (G fwd, 3x D fwd+bwd, G bwd): median %.2f ms, min %.2f ms, max %.2f ms -> %.0f images/s "
              "(median), %.0f images/s (best)\n",
              median, steps.front(), steps.back(), o.batch * 1000.0 / median, o.batch * 1000.0 / steps.front());

  if (!o.json.empty()) {
    nlohmann::json j;
    j["bench"] = "cpu_layers";
    j["model"] = {{"image", kImage}, {"channels", kChannels}, {"nz", kNz}, {"ngf", kWidth}, {"ndf", kWidth}};
    j["batch"] = o.batch;
    j["iters"] = o.iters;
    j["warmup"] = o.warmup;
    j["clock"] = o.clock;
    j["omp_threads"] = omp_get_max_threads();
    j["blas_threads"] = openblas_get_num_threads();
    for (const LayerTimes& l : layers)
      j["layers"].push_back({{"net", l.net}, {"kind", l.kind}, {"output", l.shape}, {"forward_ms", l.forward_ms},
                             {"backward_ms", l.backward_ms}});
    j["step_ms"] = {{"median", median}, {"min", steps.front()}, {"max", steps.back()}};
    j["images_per_s_median"] = o.batch * 1000.0 / median;
    std::ofstream(o.json) << j.dump(2) << "\n";
    std::printf("# wrote %s\n", o.json.c_str());
  }
  return 0;
}
