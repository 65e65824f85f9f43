// What bench_throughput measured, and how it prints it (nccl-tests-style table) and writes it (JSON).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "model_flops.h"

namespace gt::bench {

constexpr int64_t kCelebaImages = 202599;  // CelebA's aligned faces, all splits
constexpr int kCelebaEpochs = 100;         // the reference run (config/dcgan_celeba64.yaml)

struct ModelShape {
  int nz = 0, g_width = 0, d_width = 0, resolution = 0, channels = 0;
};

// One (precision, batch) cell: the timings, or why it could not run.
struct ThroughputRow {
  std::string precision;
  int64_t batch = 0;
  std::string engine;  // StepEngine::describe()
  std::string error;   // non-empty: the row failed (out of memory, a precision not implemented, ...)
  std::vector<double> ms;  // each timed step, submit to wait, in order
  int64_t step_flops = 0;
  size_t device_bytes = 0;
  double last_d_loss = 0, last_g_loss = 0;

  double median_ms() const;
  double images_per_s() const { return batch / (median_ms() * 1e-3); }
  double model_tflops() const { return step_flops / (median_ms() * 1e-3) / 1e12; }
  double celeba_minutes() const { return kCelebaImages / images_per_s() * kCelebaEpochs / 60.0; }
};

struct ThroughputReport {
  std::string date_utc, host, device_kind, device_name, commit, version;
  ModelShape model;
  std::string layout, graph, deterministic;
  int warmup = 0, steps = 0, threads = 0;
  uint64_t seed = 0;
  std::map<std::string, double> peak_tflops;  // by precision; missing: no MFU for that precision
  std::string peak_source;                    // where the peaks come from, printed with them
  std::vector<StepFlops> flops;               // one per batch
  std::vector<ThroughputRow> rows;
  // The step timed: the DCGAN step by default; with a gradient penalty or micro-batches the objective,
  // optimizer and plan it used, and MFU is not given (the FLOP count is the DCGAN step's).
  std::string loss = "BCE with logits", optimizer = "adam lr 2e-4 betas (0.5, 0.999)";
  float gp_weight = 0;
  int64_t micro_batch = 0;
  bool counts_flops() const { return gp_weight <= 0 && micro_batch == 0; }

  std::optional<double> mfu(const ThroughputRow& r) const;
};

void print_flops(const ThroughputReport& rep);  // per-layer multiply-adds and the step total per batch
void print_table(const ThroughputReport& rep);
void write_json(const ThroughputReport& rep, const std::string& path, bool flops_only);

}  // namespace gt::bench
