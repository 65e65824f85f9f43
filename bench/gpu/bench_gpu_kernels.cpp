// Times the CUDA backend's kernels on DCGAN-64 shapes (cuDNN convolutions per layer and direction, batch norm, activations, Adam, noise, image conversion) against measured ceilings; prints a table, writes JSON.
//
// Usage: bench_gpu_kernels [--batch 256] [--reps 20] [--json FILE]   (--help: what each means)
// Each row: the shape, the median time over --reps launches after 3 warm-ups (CUDA events), the
// useful work (FLOPs for convolutions, the fewest bytes for memory-bound kernels: each input read and
// each output written once), and that work over time as a fraction of the measured ceiling (a large
// device-to-device copy for bandwidth, an 8192^3 SGEMM in the row's precision for FLOP/s).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

namespace {

struct Options {
  int batch = 256;
  int reps = 20;
  std::string json_path;
};

// Parses the command line into o; returns -1 to go on, else the exit status (0 after --help, 2 for bad usage).
// A build without CUDA parses too, so that --help and usage errors behave the same there.
int parse(int argc, char** argv, Options& o) {
  CLI::App app{"Times the CUDA backend's kernels on DCGAN-64 shapes against measured ceilings (copy bandwidth, "
               "SGEMM FLOP/s); a table and optionally JSON."};
  app.add_option("--batch", o.batch, "batch size of every shape")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--reps", o.reps, "timed launches per kernel (median), after 3 warm-ups")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--json", o.json_path, "write every row and the ceilings to this JSON file");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return -1;
}

}  // namespace

#ifdef GANTRAIN_HAVE_CUDA

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nlohmann/json.hpp>

#include "cuda/arena.h"
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/conv.h"
#include "core/rng.h"
#include "cuda/device.h"
#include "cuda/kernels.h"
#include "cuda/optim_gpu.h"
#include "train/optim.h"

namespace {

using gt::cuda::DeviceBuffer;
using gt::cuda::Precision;

// Median milliseconds of one call of fn over reps, after warm-ups, timed with events on stream.
double median_ms(cudaStream_t stream, int reps, const std::function<void()>& fn) {
  for (int i = 0; i < 3; ++i) fn();
  CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaEventRecord(start, stream));
    fn();
    CUDA_CHECK(cudaEventRecord(stop, stream));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

DeviceBuffer<float> random_buffer(size_t n, uint64_t seed, cudaStream_t stream) {
  std::vector<float> h(n);
  gt::fill_normal(h.data(), static_cast<int64_t>(n), 0.f, 1.f, seed, gt::RngStream::test, 0);
  DeviceBuffer<float> d(n);
  d.upload(h.data(), n, stream);
  CUDA_CHECK(cudaStreamSynchronize(stream));  // h goes away
  return d;
}

struct Row {
  std::string kernel, shape, precision;
  double ms = 0, work = 0;  // FLOPs or bytes
  bool flops = false;
  double ceiling = 0;       // FLOP/s or bytes/s
};

struct Ceilings {
  double copy_bytes_per_s = 0;
  double sgemm_fp32 = 0, sgemm_tf32 = 0;
};

Ceilings measure_ceilings(gt::cuda::GpuContext& fp32, gt::cuda::GpuContext& tf32, int reps) {
  Ceilings c;
  const size_t bytes = size_t{1} << 30;
  DeviceBuffer<std::byte> a(bytes), b(bytes);
  a.fill_bytes(1, fp32.stream());
  const double copy_ms = median_ms(fp32.stream(), reps, [&] {
    CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, fp32.stream()));
  });
  c.copy_bytes_per_s = 2.0 * bytes / (copy_ms * 1e-3);  // read plus write
  const int n = 8192;
  auto x = random_buffer(size_t{1} * n * n, 1, fp32.stream()), y = random_buffer(size_t{1} * n * n, 2, fp32.stream());
  DeviceBuffer<float> z(size_t{1} * n * n);
  const float one = 1.f, zero = 0.f;
  for (gt::cuda::GpuContext* ctx : {&fp32, &tf32}) {
    const double ms = median_ms(ctx->stream(), std::max(3, reps / 4), [&] {
      CUBLAS_CHECK(cublasSgemm(ctx->cublas(), CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, x.data(), n, y.data(), n, &zero,
                               z.data(), n));
    });
    (ctx == &fp32 ? c.sgemm_fp32 : c.sgemm_tf32) = 2.0 * n * n * static_cast<double>(n) / (ms * 1e-3);
  }
  return c;
}

struct ConvLayer {
  const char* name;
  bool transposed;
  int in_channels, in_size, out_channels, kernel, stride, padding;
};

// DCGAN-64 (nz 100, ngf = ndf = 64, nc 3).
const ConvLayer kLayers[] = {
    {"G.0", true, 100, 1, 512, 4, 1, 0},  {"G.3", true, 512, 4, 256, 4, 2, 1}, {"G.6", true, 256, 8, 128, 4, 2, 1},
    {"G.9", true, 128, 16, 64, 4, 2, 1},  {"G.12", true, 64, 32, 3, 4, 2, 1},  {"D.0", false, 3, 64, 64, 4, 2, 1},
    {"D.2", false, 64, 32, 128, 4, 2, 1}, {"D.5", false, 128, 16, 256, 4, 2, 1}, {"D.8", false, 256, 8, 512, 4, 2, 1},
    {"D.11", false, 512, 4, 1, 4, 1, 0}};

gt::ConvGeometry geometry(const ConvLayer& l, int batch) {
  gt::ConvGeometry g;
  g.batch = batch;
  g.in_channels = l.in_channels;
  g.in_h = g.in_w = l.in_size;
  g.out_channels = l.out_channels;
  g.kernel = l.kernel;
  g.stride = l.stride;
  g.padding = l.padding;
  g.out_h = g.out_w = l.transposed ? gt::conv_transpose_out_size(l.in_size, l.kernel, l.stride, l.padding)
                                   : gt::conv_out_size(l.in_size, l.kernel, l.stride, l.padding);
  return g;
}

void bench_convs(std::vector<Row>& rows, gt::cuda::GpuContext& ctx, double flop_ceiling, int batch, int reps) {
  gt::cuda::ConvEngine conv(ctx);
  const cudaStream_t s = ctx.stream();
  for (const ConvLayer& l : kLayers) {
    const gt::ConvGeometry g = geometry(l, batch);
    const size_t in_n = size_t{1} * g.batch * g.in_channels * g.in_h * g.in_w;
    const size_t out_n = size_t{1} * g.batch * g.out_channels * g.out_h * g.out_w;
    const size_t w_n = size_t{1} * g.in_channels * g.out_channels * g.kernel * g.kernel;
    auto in = random_buffer(in_n, 3, s), w = random_buffer(w_n, 4, s), dout = random_buffer(out_n, 5, s);
    DeviceBuffer<float> out(out_n), dinp(in_n), dw(w_n);
    dw.fill_bytes(0, s);
    // Multiply-adds of the convolution, whichever side is its input: the small side times K*K*channels.
    const double small_positions = static_cast<double>(g.batch) * (l.transposed ? g.in_h * g.in_w : g.out_h * g.out_w);
    const double flops = 2.0 * small_positions * g.in_channels * g.out_channels * g.kernel * g.kernel;
    const std::string shape = std::string(l.name) + " " + std::to_string(g.in_channels) + "x" + std::to_string(g.in_h) +
                              "->" + std::to_string(g.out_channels) + "x" + std::to_string(g.out_h);
    const std::string prec = gt::cuda::precision_name(ctx.precision());
    // Forward, then the backward's two halves together (data and filter), each as the layer runs them.
    const double fwd = median_ms(s, reps, [&] {
      if (l.transposed) conv.conv_transpose2d_forward(out.data(), in.data(), w.data(), nullptr, g);
      else conv.conv2d_forward(out.data(), in.data(), w.data(), nullptr, g);
    });
    const double bwd = median_ms(s, reps, [&] {
      if (l.transposed)
        conv.conv_transpose2d_backward(dinp.data(), dw.data(), nullptr, dout.data(), in.data(), w.data(), g);
      else conv.conv2d_backward(dinp.data(), dw.data(), nullptr, dout.data(), in.data(), w.data(), g);
    });
    rows.push_back({"conv forward", shape, prec, fwd, flops, true, flop_ceiling});
    rows.push_back({"conv backward", shape, prec, bwd, 2 * flops, true, flop_ceiling});
  }
  std::printf("%s", conv.describe().c_str());
}

void bench_memory_bound(std::vector<Row>& rows, gt::cuda::GpuContext& ctx, double bw, int batch, int reps) {
  const cudaStream_t s = ctx.stream();
  using gt::cuda::Activation;
  // Batch norm + activation on the generator's and discriminator's feature maps.
  const int shapes[][3] = {{64, 32, 32}, {128, 16, 16}, {256, 8, 8}, {512, 4, 4}};
  for (const auto& sh : shapes) {
    const int C = sh[0], HW = sh[1] * sh[2];
    const size_t n = size_t{1} * batch * C * HW;
    auto x = random_buffer(n, 6, s), dy = random_buffer(n, 7, s), w = random_buffer(C, 8, s), b = random_buffer(C, 9, s);
    DeviceBuffer<float> y(n), dx(n), mean(C), rstd(C), var(C), dw(C), db(C);
    DeviceBuffer<double> ws(gt::cuda::batchnorm_workspace_doubles(batch, C, HW));
    const std::string shape = std::to_string(batch) + "x" + std::to_string(C) + "x" + std::to_string(sh[1]) + "x" +
                              std::to_string(sh[2]);
    const double fwd = median_ms(s, reps, [&] {
      gt::cuda::batchnorm_forward_train(y.data(), mean.data(), rstd.data(), var.data(), x.data(), w.data(), b.data(),
                                        batch, C, HW, 1e-5f, Activation::relu, 0.f, ws.data(), s);
    });
    const double bwd = median_ms(s, reps, [&] {
      gt::cuda::batchnorm_backward_train(dx.data(), dw.data(), db.data(), dy.data(), x.data(), mean.data(), rstd.data(),
                                         w.data(), b.data(), batch, C, HW, Activation::relu, 0.f, ws.data(), s);
    });
    const double act = median_ms(s, reps, [&] {
      gt::cuda::activation_forward(y.data(), x.data(), static_cast<int64_t>(n), Activation::leaky_relu, 0.2f, s);
    });
    rows.push_back({"batchnorm+relu forward (train)", shape, "fp32", fwd, 8.0 * n, false, bw});
    rows.push_back({"batchnorm+relu backward (train)", shape, "fp32", bwd, 12.0 * n, false, bw});
    rows.push_back({"leaky_relu forward", shape, "fp32", act, 8.0 * n, false, bw});
  }
  // Adam over the convolution weights of DCGAN-64 (its 3,712 batch-norm parameters left out), one tensor list.
  {
    const int64_t sizes[] = {819200, 2097152, 524288, 131072, 3072, 3072, 2097152, 524288, 131072, 8192};
    std::vector<DeviceBuffer<float>> bufs;
    std::vector<gt::cuda::TensorRef> refs;
    int64_t total = 0;
    for (int64_t sz : sizes) {
      for (int k = 0; k < 4; ++k) bufs.push_back(random_buffer(static_cast<size_t>(sz), 10 + k, s));
      const size_t i = bufs.size() - 4;
      refs.push_back({bufs[i].data(), bufs[i + 1].data(), bufs[i + 2].data(), bufs[i + 3].data(), sz});
      total += sz;
    }
    for (size_t i = 0; i < bufs.size(); i += 4) bufs[i + 3].fill_bytes(0, s);  // exp_avg_sq >= 0
    gt::cuda::MultiTensorList list(refs, s);
    gt::OptimConfig cfg;
    const auto k = gt::adam_coefficients(cfg, 10);
    const double ms = median_ms(s, reps, [&] { gt::cuda::adam_update(list.view(), k, nullptr, s); });
    rows.push_back({"adam (multi-tensor)", std::to_string(total) + " params", "fp32", ms, 28.0 * total, false, bw});
  }
  {
    const int nz = 100;
    DeviceBuffer<float> z(size_t{1} * batch * nz);
    const double ms = median_ms(s, reps, [&] { gt::cuda::fill_noise(z.data(), batch, nz, 7, 1234, 0, s); });
    rows.push_back({"philox noise", std::to_string(batch) + "x" + std::to_string(nz), "fp32", ms, 4.0 * batch * nz,
                    false, bw});
  }
  {
    const int R = 64, C = 3;
    const size_t n = size_t{1} * batch * R * R * C;
    DeviceBuffer<uint8_t> pixels(n), flips(batch);
    pixels.fill_bytes(0x5A, s);
    DeviceBuffer<float> out(n);
    gt::cuda::draw_flips(flips.data(), batch, 7, 99, 0, s);
    const double ms = median_ms(s, reps, [&] {
      gt::cuda::u8_nhwc_to_f32_nchw(out.data(), pixels.data(), flips.data(), batch, R, R, C, C, 127.5f, -1.f, s);
    });
    rows.push_back({"uint8 NHWC -> float NCHW", std::to_string(batch) + "x64x64x3", "fp32", ms, 5.0 * n, false, bw});
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  if (const int rc = parse(argc, argv, opt); rc >= 0) return rc;
  const gt::cuda::DeviceReport dev = gt::cuda::query_devices();
  if (dev.count == 0) {
    std::printf("bench_gpu_kernels: no usable CUDA device (%s); nothing to time\n", dev.reason.c_str());
    return 0;
  }
  try {
    gt::cuda::GpuOptions o32;
    gt::cuda::GpuOptions otf = o32;
    otf.precision = Precision::tf32;
    gt::cuda::GpuContext fp32(o32), tf32(otf);
    const Ceilings c = measure_ceilings(fp32, tf32, opt.reps);
    std::printf("# %s (sm_%d%d), batch %d: copy %.0f GB/s (read+write), SGEMM fp32 %.1f TFLOP/s, tf32 %.1f TFLOP/s\n",
                dev.name.c_str(), dev.cc_major, dev.cc_minor, opt.batch, c.copy_bytes_per_s / 1e9, c.sgemm_fp32 / 1e12,
                c.sgemm_tf32 / 1e12);
    std::vector<Row> rows;
    bench_memory_bound(rows, fp32, c.copy_bytes_per_s, opt.batch, opt.reps);
    bench_convs(rows, fp32, c.sgemm_fp32, opt.batch, opt.reps);
    bench_convs(rows, tf32, c.sgemm_tf32, opt.batch, opt.reps);

    std::printf("%-32s %-26s %-5s %10s %14s %8s\n", "kernel", "shape", "prec", "ms", "rate", "of ceil");
    nlohmann::json out_rows = nlohmann::json::array();
    for (const Row& r : rows) {
      const double rate = r.work / (r.ms * 1e-3);
      char rate_text[32];
      std::snprintf(rate_text, sizeof rate_text, r.flops ? "%.2f TFLOP/s" : "%.1f GB/s", r.flops ? rate / 1e12 : rate / 1e9);
      std::printf("%-32s %-26s %-5s %10.4f %14s %7.1f%%\n", r.kernel.c_str(), r.shape.c_str(), r.precision.c_str(),
                  r.ms, rate_text, 100.0 * rate / r.ceiling);
      out_rows.push_back({{"kernel", r.kernel}, {"shape", r.shape}, {"precision", r.precision}, {"median_ms", r.ms},
                          {r.flops ? "flops" : "min_bytes", r.work}, {"fraction_of_ceiling", rate / r.ceiling}});
    }
    if (!opt.json_path.empty()) {
      nlohmann::json j{{"benchmark", "gpu_kernels"},
                       {"device", dev.name},
                       {"compute_capability", std::to_string(dev.cc_major) + "." + std::to_string(dev.cc_minor)},
                       {"batch", opt.batch},
                       {"reps", opt.reps},
                       {"ceilings", {{"copy_bytes_per_s", c.copy_bytes_per_s},
                                     {"sgemm_fp32_flops", c.sgemm_fp32},
                                     {"sgemm_tf32_flops", c.sgemm_tf32}}},
                       {"rows", out_rows}};
      std::ofstream(opt.json_path) << j.dump(2) << "\n";
      std::printf("wrote %s\n", opt.json_path.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gpu_kernels: %s\n", e.what());
    return 1;
  }
  return 0;
}

#else
int main(int argc, char** argv) {
  Options opt;
  if (const int rc = parse(argc, argv, opt); rc >= 0) return rc;
  std::printf("bench_gpu_kernels: built without CUDA (GANTRAIN_CUDA=OFF); nothing to time\n");
  return 0;
}
#endif
