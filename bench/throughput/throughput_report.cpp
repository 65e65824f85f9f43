// bench_throughput's table and JSON: every figure printed with its setup (device, model, precision, peak used).
#include "throughput_report.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace gt::bench {

double ThroughputRow::median_ms() const {
  std::vector<double> s = ms;
  std::sort(s.begin(), s.end());
  const size_t n = s.size();
  GT_CHECK(n > 0, "no timed steps");
  return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

std::optional<double> ThroughputReport::mfu(const ThroughputRow& r) const {
  if (!counts_flops()) return std::nullopt;
  const auto it = peak_tflops.find(r.precision);
  if (it == peak_tflops.end() || it->second <= 0) return std::nullopt;
  return r.model_tflops() / it->second;
}

namespace {

const StepFlops& flops_for(const ThroughputReport& rep, int64_t batch) {
  for (const StepFlops& f : rep.flops)
    if (f.batch == batch) return f;
  runtime_error("no FLOP count for batch {}", batch);
}

void print_net(const char* title, const NetMacs& net, int64_t batch) {
  std::printf("# %s, per image: %.1f M multiply-adds forward\n", title, net.forward / 1e6 / batch);
  for (const LayerMacs& l : net.layers)
    std::printf("#   %-52s %9.2f M MACs/image\n", l.name.c_str(), l.macs / 1e6 / batch);
}

nlohmann::json net_json(const NetMacs& net) {
  nlohmann::json layers = nlohmann::json::array();
  for (const LayerMacs& l : net.layers) layers.push_back({{"layer", l.name}, {"macs", l.macs}});
  return {{"forward_macs", net.forward}, {"first_layer_macs", net.first}, {"layers", layers}};
}

}  // namespace

void print_flops(const ThroughputReport& rep) {
  const StepFlops& f = rep.flops.front();
  std::printf("# model FLOPs: %s\n", step_flops_formula());
  print_net("G", f.g, f.batch);
  print_net("D", f.d, f.batch);
  std::printf("%8s %14s %14s %14s %16s %12s\n", "batch", "Gf (GMAC)", "Df (GMAC)", "G1+D1 (GMAC)", "step (GFLOP)",
              "GFLOP/image");
  for (const StepFlops& s : rep.flops)
    std::printf("%8lld %14.3f %14.3f %14.3f %16.1f %12.4f\n", static_cast<long long>(s.batch), s.g.forward / 1e9,
                s.d.forward / 1e9, (s.g.first + s.d.first) / 1e9, s.step_flops / 1e9,
                s.step_flops / 1e9 / static_cast<double>(s.batch));
}

void print_table(const ThroughputReport& rep) {
  std::printf("\n# bench_throughput: one DCGAN training step (D on real + fake, G through the updated D; Adam) "
              "via StepEngine, submit to wait on a steady clock\n");
  if (!rep.counts_flops())
    std::printf("# the step timed: %s; %s%s (no TFLOP/s or MFU: the FLOP count is the plain DCGAN step's)\n",
                rep.loss.c_str(), rep.optimizer.c_str(),
                rep.micro_batch > 0 ? fmt::format("; micro-batches of {}, accumulated", rep.micro_batch).c_str() : "");
  std::printf("# %s %s (%s), commit %s, %s UTC\n", rep.device_kind.c_str(), rep.device_name.c_str(), rep.host.c_str(),
              rep.commit.c_str(), rep.date_utc.c_str());
  std::printf("# model: nz %d, G width %d, D width %d, %dx%dx%d; layout %s, CUDA graph %s, deterministic %s; "
              "%d warm-up steps, median of %d\n",
              rep.model.nz, rep.model.g_width, rep.model.d_width, rep.model.resolution, rep.model.resolution,
              rep.model.channels, rep.layout.c_str(), rep.graph.c_str(), rep.deterministic.c_str(), rep.warmup,
              rep.steps);
  std::printf("# MFU = model FLOPs per step / median step time / peak; step FLOPs = 2 * (3 Gf - G1 + 8 Df - 2 D1) "
              "(above; docs/performance.md)\n");
  std::string peaks;
  for (const auto& [p, v] : rep.peak_tflops) peaks += fmt::format("{}{} {:.1f}", peaks.empty() ? "" : ", ", p, v);
  std::printf("# peak TFLOP/s used: %s (%s)\n", peaks.empty() ? "none" : peaks.c_str(), rep.peak_source.c_str());
  std::printf("# CelebA: %lld images x %d epochs at the median rate\n", static_cast<long long>(kCelebaImages),
              kCelebaEpochs);
  std::printf("%-6s %6s %10s %10s %10s %11s %9s %7s %12s %9s\n", "prec", "batch", "median ms", "min ms", "max ms",
              "images/s", "TFLOP/s", "MFU", "100 ep (min)", "dev MiB");
  for (const ThroughputRow& r : rep.rows) {
    if (!r.error.empty()) {
      std::printf("%-6s %6lld failed: %s\n", r.precision.c_str(), static_cast<long long>(r.batch), r.error.c_str());
      continue;
    }
    const auto mfu = rep.mfu(r);
    const std::string mfu_text = mfu ? fmt::format("{:.1f}%", 100 * *mfu) : "-";
    const double lo = *std::min_element(r.ms.begin(), r.ms.end()), hi = *std::max_element(r.ms.begin(), r.ms.end());
    const std::string tflops = rep.counts_flops() ? fmt::format("{:.2f}", r.model_tflops()) : "-";
    std::printf("%-6s %6lld %10.3f %10.3f %10.3f %11.0f %9s %7s %12.1f %9.0f\n", r.precision.c_str(),
                static_cast<long long>(r.batch), r.median_ms(), lo, hi, r.images_per_s(), tflops.c_str(),
                mfu_text.c_str(), r.celeba_minutes(), r.device_bytes / 1048576.0);
  }
}

void write_json(const ThroughputReport& rep, const std::string& path, bool flops_only) {
  nlohmann::json j;
  j["benchmark"] = flops_only ? "dcgan_step_flops" : "throughput";
  j["date"] = rep.date_utc;
  j["host"] = rep.host;
  j["device"] = {{"kind", rep.device_kind}, {"name", rep.device_name}};
  j["commit"] = rep.commit;
  j["version"] = rep.version;
  j["config"] = {{"model", {{"nz", rep.model.nz}, {"g_width", rep.model.g_width}, {"d_width", rep.model.d_width},
                            {"resolution", rep.model.resolution}, {"channels", rep.model.channels}}},
                 {"layout", rep.layout},
                 {"cuda_graph", rep.graph},
                 {"deterministic", rep.deterministic},
                 {"warmup_steps", rep.warmup},
                 {"timed_steps", rep.steps},
                 {"threads", rep.threads},
                 {"seed", rep.seed},
                 {"optimizer", rep.optimizer},
                 {"loss", rep.loss},
                 {"gp_weight", rep.gp_weight},
                 {"micro_batch", rep.micro_batch}};
  nlohmann::json flops = nlohmann::json::array();
  for (const StepFlops& f : rep.flops)
    flops.push_back({{"batch", f.batch}, {"g", net_json(f.g)}, {"d", net_json(f.d)}, {"step_flops", f.step_flops}});
  j["flop_count"] = {{"formula", step_flops_formula()}, {"per_batch", flops}};
  j["peak_tflops"] = rep.peak_tflops;
  j["peak_source"] = rep.peak_source;
  j["celeba"] = {{"images", kCelebaImages}, {"epochs", kCelebaEpochs}};
  nlohmann::json rows = nlohmann::json::array();
  for (const ThroughputRow& r : rep.rows) {
    nlohmann::json row{{"precision", r.precision}, {"batch", r.batch}, {"engine", r.engine}};
    if (!r.error.empty()) {
      row["error"] = r.error;
    } else {
      const auto mfu = rep.mfu(r);
      row["median_ms"] = r.median_ms();
      row["min_ms"] = *std::min_element(r.ms.begin(), r.ms.end());
      row["max_ms"] = *std::max_element(r.ms.begin(), r.ms.end());
      row["all_ms"] = r.ms;
      row["images_per_s"] = r.images_per_s();
      row["step_flops"] = flops_for(rep, r.batch).step_flops;
      row["model_tflops"] = rep.counts_flops() ? nlohmann::json(r.model_tflops()) : nlohmann::json(nullptr);
      row["mfu"] = mfu ? nlohmann::json(*mfu) : nlohmann::json(nullptr);
      row["celeba_100_epochs_min"] = r.celeba_minutes();
      row["device_bytes"] = r.device_bytes;
      row["last_d_loss"] = r.last_d_loss;
      row["last_g_loss"] = r.last_g_loss;
    }
    rows.push_back(row);
  }
  j["rows"] = rows;
  std::ofstream out(path);
  if (!out) user_error("cannot write the JSON output file {}", path);
  out << j.dump(2) << '\n';
  std::printf("wrote %s\n", path.c_str());
}

}  // namespace gt::bench
