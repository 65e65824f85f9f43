// The training loop of one rank (a single process is rank 0 of 1). See docs/user-guide.md and docs/distributed.md.
#include "train/trainer.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <omp.h>
#include <optional>
#include <unistd.h>

#include "core/rng.h"
#include "core/version.h"
#include "data/image_source.h"
#include "data/loader.h"
#include "parallel/agreement.h"
#include "parallel/communicator.h"
#include "parallel/fault_injection.h"
#include "parallel/launch.h"
#if GANTRAIN_HAVE_CUDA
#include "cuda/device.h"
#endif
#include "io/checkpoint.h"
#include "io/image.h"
#include "io/metrics.h"
#include "nn/dcgan.h"
#include "train/engine.h"
#include "train/gan_step.h"
#include "train/model_state.h"

namespace gt {

namespace fs = std::filesystem;

namespace {

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal.store(sig); }

// The fixed noise of sample grids: a step number no training step reaches.
constexpr uint64_t kSampleNoiseStep = ~0ull;

// Console progress mirrored to train.log; silent on ranks other than 0.
class Console {
 public:
  Console(const std::string& log_path, bool enabled) {
    if (enabled) log_.open(log_path, std::ios::app);
  }
  template <class... Args>
  void line(fmt::format_string<Args...> f, Args&&... args) {
    if (!log_.is_open()) return;
    std::string s = fmt::format(f, std::forward<Args>(args)...);
    fmt::print("{}\n", s);
    std::fflush(stdout);
    log_ << s << '\n';
    log_.flush();
  }

 private:
  std::ofstream log_;
};

std::string fmt_duration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02d}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02d}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

struct RunningMeans {
  double d_loss = 0, g_loss = 0, d_real = 0, d_fake = 0;
  int n = 0;
  void add(const StepResult& r) {
    d_loss += r.d_loss, g_loss += r.g_loss, d_real += r.d_real, d_fake += r.d_fake;
    ++n;
  }
};

// A hash of every parameter's bits: ranks compare it to check that they still hold the same model.
uint64_t parameter_hash(Sequential& net) {
  uint64_t h = kFnv1aStart;
  for (auto& np : net.named_params())
    h = fnv1a64({static_cast<const char*>(np.param->value.raw()), np.param->value.nbytes()}, h);
  return h;
}

// Every rank applies the same summed gradients, so the models must stay bit-identical; a library whose
// reductions differ in the last bit between ranks would let them drift apart. Returns the ranks that
// differ from rank 0 (empty when all agree).
std::vector<int> ranks_with_other_parameters(Communicator& comm, Sequential& G, Sequential& D) {
  const int64_t mine[2] = {static_cast<int64_t>(parameter_hash(G)), static_cast<int64_t>(parameter_hash(D))};
  std::vector<int64_t> all(static_cast<size_t>(2 * comm.world_size()));
  comm.all_gather(mine, all.data(), 2);
  std::vector<int> differ;
  for (int r = 1; r < comm.world_size(); ++r)
    if (all[2 * r] != all[0] || all[2 * r + 1] != all[1]) differ.push_back(r);
  return differ;
}

}  // namespace

fs::path unused_run_dir(const fs::path& dir) {
  auto taken = [](const fs::path& p) { return fs::exists(p) && !(fs::is_directory(p) && fs::is_empty(p)); };
  if (!taken(dir)) return dir;
  for (int i = 1;; ++i) {
    const fs::path candidate = fmt::format("{}.{}", dir.string(), i);
    if (!taken(candidate)) return candidate;
  }
}

DcganSpec dcgan_spec(const ModelConfig& m) {
  if (m.arch != "dcgan") user_error("model.arch '{}' is not supported (dcgan)", m.arch);
  return DcganSpec{m.nz, m.g_width, m.d_width, m.resolution, m.channels, m.leaky_slope};
}

// run.device on this rank: auto is cuda when this rank sees a usable GPU (the ranks then agree).
bool wants_cuda(DeviceChoice device) {
  if (device != DeviceChoice::automatic) return device == DeviceChoice::cuda;
#if GANTRAIN_HAVE_CUDA
  return cuda::query_devices().count > 0;
#else
  return false;
#endif
}

int set_cpu_threads(int threads) {
  const int n = threads > 0 ? threads : omp_get_num_procs();
  // OpenBLAS itself stays single-threaded: the CPU engine splits GEMMs over OpenMP threads (nn/cpu/gemm.cpp).
  omp_set_num_threads(n);
  return n;
}

TrainSummary train(const Config& cfg) {
  std::unique_ptr<Communicator> comm = open_communicator(cfg.dist.backend, cfg.dist.timeout_s);
  return train(cfg, *comm);
}

TrainSummary train(const Config& cfg, Communicator& comm) {
  comm.set_timeout(cfg.dist.timeout_s);
  const bool lead = comm.rank() == 0;  // rank 0 owns the console and the run directory
  const int P = comm.world_size();
  const std::string config_yaml = config_to_yaml(cfg);
  check_same_config_and_build(comm, config_yaml);
  // Everything that can be wrong with the user's input is checked, on every rank, before the run
  // directory exists; a problem on any rank stops all of them, reported once.
  const uint64_t seed = static_cast<uint64_t>(cfg.run.seed);
  DcganSpec spec;
  const int64_t B = cfg.train.batch_size;
  std::unique_ptr<ImageSource> source;
  std::optional<BatchPlan> plan_holder;
  std::optional<FaultPlan> fault;
  // run.device auto: cuda only when every rank has a GPU, so that all ranks run the same engine.
  int64_t use_cuda = wants_cuda(cfg.run.device);
  if (cfg.run.device == DeviceChoice::automatic) comm.all_reduce(&use_cuda, 1, ReduceOp::min);
  const Device device = use_cuda ? Device::cuda : Device::cpu;
  run_agreed(comm, [&] {
    spec = dcgan_spec(cfg.model);
    check_backend_for_device(cfg.dist.backend, device == Device::cuda, cfg.run.device);
    if (B % P != 0)
      user_error("train.batch_size {} does not divide over {} ranks: every rank takes an equal share of the global "
                 "batch, so use a multiple of {} (e.g. {})",
                 B, P, P, (B + P - 1) / P * P);
    fault = fault_plan_from_env(process_env());
    source = open_image_source(cfg.data, spec.channels, spec.resolution, seed);
    plan_holder.emplace(source->size(), B, seed);
  });
  BatchPlan& plan = *plan_holder;
  const int64_t total_steps = cfg.train.max_steps > 0 ? cfg.train.max_steps : cfg.train.epochs * plan.steps_per_epoch();
  // run.threads 0: this rank's cores (mpirun may bind it to some), shared with the node's other ranks.
  set_cpu_threads(cfg.run.threads > 0 ? cfg.run.threads : std::max(1, omp_get_num_procs() / comm.local_size()));
  Sequential G = make_dcgan_generator(spec);
  Sequential D = make_dcgan_discriminator(spec);
  dcgan_init(G, cfg.model.init_std, seed, 1);
  dcgan_init(D, cfg.model.init_std, seed, 2);
  auto opt_g = make_optimizer(cfg.optim_g, G.named_params());
  auto opt_d = make_optimizer(cfg.optim_d, D.named_params());
  GanModels models{&G, &D, opt_g.get(), opt_d.get()};
  EngineOptions eng;
  eng.device = device;
  eng.precision = cfg.run.precision;
  eng.layout = cfg.run.layout;
  eng.cuda_graph = cfg.run.cuda_graph;
  eng.arena_mb = cfg.run.gpu_arena_mb;
  eng.dist_backend = cfg.dist.backend;
  eng.timeout_s = cfg.dist.timeout_s;
  eng.global_batch = B;
  eng.local_batch = B / P;
  eng.shard_first = comm.rank() * (B / P);
  eng.seed = seed;
  eng.clip_grad_norm = cfg.train.clip_grad_norm;
  eng.flip = cfg.data.flip;
  eng.sync_bn = cfg.dist.sync_bn;
  // Gradients summed over the ranks in buckets during backward (with one rank: copies, same bits).
  eng.bucket_bytes = std::max<int64_t>(1, static_cast<int64_t>(cfg.dist.bucket_mb * 1048576.0));
  eng.nz = spec.nz;
  std::unique_ptr<StepEngine> engine = make_engine(eng, models, comm);

  LoaderOptions loader_opt;
  loader_opt.output_u8 = engine->wants_u8_batches();
  // Every batch buffer the loader cycles through is the engine's kind (page-locked for a GPU).
  loader_opt.allocate = [&engine](const Shape& shape, DType dtype) { return engine->make_batch_buffer(shape, dtype); };
  loader_opt.global_batch = B;
  loader_opt.rank = comm.rank();
  loader_opt.world_size = P;
  loader_opt.prefetch_batches = cfg.data.prefetch_batches;
  loader_opt.threads = cfg.data.loader_threads;
  loader_opt.flip = cfg.data.flip;
  loader_opt.seed = seed;
  loader_opt.first_step = 0;
  loader_opt.end_step = total_steps;
  Loader loader(*source, loader_opt);
  const int64_t n_local = loader.shard_size();
  GT_CHECK(n_local == eng.local_batch && loader.shard_first() == eng.shard_first,
           "loader shard {}+{} differs from the engine's {}+{}", loader.shard_first(), n_local, eng.shard_first,
           eng.local_batch);
  // dist.sync_bn false leaves each rank's batch norm to its shard; rank 0's running statistics are saved.
  const std::vector<std::string> rank_lines =
      preflight(comm, fmt::format("{} (pid {}, local rank {} of {}), {}", comm.host(), getpid(), comm.local_rank(),
                                  comm.local_size(), engine->describe()));

  TrainSummary sum;
  const fs::path asked_dir = fs::path(cfg.run.out_dir) / cfg.run.name;
  sum.run_dir = (lead ? unused_run_dir(asked_dir) : asked_dir).string();
  sum.metrics_path = (fs::path(sum.run_dir) / "metrics.jsonl").string();
  if (lead) {
    fs::create_directories(fs::path(sum.run_dir) / "samples");
    fs::create_directories(fs::path(sum.run_dir) / "checkpoints");
    std::ofstream f(fs::path(sum.run_dir) / "config.yaml");
    f << config_yaml;
    if (!f) runtime_error("cannot write {}/config.yaml", sum.run_dir);
  }
  std::unique_ptr<MetricsWriter> metrics =
      lead ? std::make_unique<MetricsWriter>(sum.metrics_path) : std::make_unique<MetricsWriter>();
  Console con((fs::path(sum.run_dir) / "train.log").string(), lead);

  con.line("gantrain {} ({}) | run {} | {}", version(), git_revision(), sum.run_dir, engine->describe());
  if (fs::path(sum.run_dir) != asked_dir)
    con.line("note: {} already holds a run; this run writes to {} instead (nothing is overwritten)",
             asked_dir.string(), sum.run_dir);
  con.line("ranks: {} ({} communicator) | {} images per rank per step | batch norm {}", P, comm.backend(), n_local,
           P == 1 ? "over the batch" : cfg.dist.sync_bn ? "synchronized over the ranks" : "per rank (dist.sync_bn false)");
  if (P > 1)
    for (int r = 0; r < P; ++r) con.line("  rank {}: {}", r, rank_lines[static_cast<size_t>(r)]);
  con.line("data: {}", source->describe());
  con.line("loader: {} images per step on this rank (positions {}..{}) | {}", loader.shard_size(),
           loader.shard_first(), loader.shard_first() + loader.shard_size() - 1,
           loader.threads() > 0
               ? fmt::format("{} batches read ahead by {} thread{} ({:.1f} MiB at most)", cfg.data.prefetch_batches,
                             loader.threads(), loader.threads() > 1 ? "s" : "", loader.memory_bytes_limit() / 1048576.0)
               : std::string("read on the training thread"));
  con.line("model: dcgan {}x{}x{} nz {} | G {} params | D {} params", spec.channels, spec.resolution, spec.resolution,
           spec.nz, G.param_count(), D.param_count());
  con.line("plan: batch {} | {} steps per epoch | {} steps | optim G {} lr {} | D {} lr {}", B,
           plan.steps_per_epoch(), total_steps, choice_name(cfg.optim_g.kind), cfg.optim_g.lr,
           choice_name(cfg.optim_d.kind), cfg.optim_d.lr);

  const int n_samples = cfg.log.sample_count;
  Tensor sample_z({n_samples, spec.nz});
  fill_noise(sample_z.f32(), n_samples, spec.nz, seed, kSampleNoiseStep, 0);
  const int grid_cols = std::max(1, static_cast<int>(std::lround(std::sqrt(static_cast<double>(n_samples)))));
  auto write_samples = [&](int64_t step) {
    sum.samples_path = (fs::path(sum.run_dir) / "samples" / fmt::format("step_{:08d}.png", step)).string();
    // Each rank generates a share of the grid; rank 0 gathers and writes it.
    Tensor images = generate_across_ranks([&](const Tensor& z) { return engine->generate(z); }, sample_z, comm);
    if (lead) write_grid_png(sum.samples_path, images, grid_cols);
  };
  auto write_checkpoint = [&](int64_t step) {
    sum.checkpoint_path = (fs::path(sum.run_dir) / "checkpoints" / fmt::format("ckpt_{:08d}.h5", step)).string();
    if (!lead) return;
    engine->sync_to_host();
    Checkpoint ck;
    ck.meta.step = step;
    ck.meta.epoch = plan.epoch_of(std::max<int64_t>(step - 1, 0));
    ck.meta.images_seen = step * B;
    ck.meta.world_size = P;
    ck.meta.seed = cfg.run.seed;
    ck.meta.resolution = spec.resolution;
    ck.meta.config_yaml = config_yaml;
    ck.meta.code_version = std::string(version()) + "+" + git_revision();
    // RNG and data cursor: every draw is keyed by (seed, step, index), so the step is the whole state.
    ck.meta.ints["data_cursor_step"] = step;
    export_state_dict(G, "G/params", ck.groups);
    export_state_dict(D, "D/params", ck.groups);
    export_optimizer(*opt_g, "G/optim", ck.groups);
    export_optimizer(*opt_d, "D/optim", ck.groups);
    save_checkpoint(sum.checkpoint_path, ck);
  };

  g_stop_signal.store(0);
  auto old_int = std::signal(SIGINT, on_stop_signal);
  auto old_term = std::signal(SIGTERM, on_stop_signal);
  auto old_usr1 = std::signal(SIGUSR1, on_stop_signal);  // mpirun forwards SIGUSR1 to every rank, not SIGTERM

  // Two host batches: the loader fills one while the engine (a GPU's, asynchronously) reads the other.
  Tensor batches[2] = {engine->make_batch_buffer(loader.batch_shape(), loader.batch_dtype()),
                       engine->make_batch_buffer(loader.batch_shape(), loader.batch_dtype())};
  RunningMeans window;
  using clock = std::chrono::steady_clock;
  const auto t_start = clock::now();
  auto t_window = t_start;
  int64_t step = 0;
  if (total_steps > 0) loader.next(batches[0]);
  for (; step < total_steps; ++step) {
    inject_fault_if_due(fault, comm.rank(), step);
    engine->submit(batches[step % 2], step);
    if (step + 1 < total_steps) loader.next(batches[(step + 1) % 2]);  // while the step runs (on a GPU)
    StepResult r = engine->wait();
    // Each rank's share summed over the ranks: the global batch's means, the same on every rank.
    double global[4] = {r.d_loss, r.g_loss, r.d_real, r.d_fake};
    comm.all_reduce(global, 4, ReduceOp::sum);
    r.d_loss = global[0], r.g_loss = global[1], r.d_real = global[2], r.d_fake = global[3];
    if (!std::isfinite(r.d_loss) || !std::isfinite(r.g_loss))
      throw AgreedRuntimeError(fmt::format(
          "step {}: loss is not finite (d_loss {}, g_loss {}); stopping. Lower the learning rate or "
          "enable train.clip_grad_norm.", step, r.d_loss, r.g_loss));
    window.add(r);
    const int64_t done = step + 1;
    if (done % cfg.log.every_steps == 0 || done == total_steps) {
      const double dt = std::chrono::duration<double>(clock::now() - t_window).count();
      const double ips = window.n * B / std::max(dt, 1e-9);
      const double elapsed = std::chrono::duration<double>(clock::now() - t_start).count();
      const double eta = elapsed / done * (total_steps - done);
      con.line("step {:>6}/{} | epoch {} | d_loss {:.4f} | g_loss {:.4f} | D(x) {:.3f} | D(G(z)) {:.3f} | {:.0f} img/s | eta {}",
               done, total_steps, plan.epoch_of(step), window.d_loss / window.n, window.g_loss / window.n,
               window.d_real / window.n, window.d_fake / window.n, ips, fmt_duration(eta));
      metrics->write(done, {{"epoch", static_cast<double>(plan.epoch_of(step))},
                           {"d_loss", window.d_loss / window.n},
                           {"g_loss", window.g_loss / window.n},
                           {"d_real", window.d_real / window.n},
                           {"d_fake", window.d_fake / window.n},
                           {"images_per_sec", ips},
                           {"lr_g", opt_g->lr()},
                           {"lr_d", opt_d->lr()}});
      window = RunningMeans();
      t_window = clock::now();
    }
    if (cfg.log.sample_every_steps > 0 && done % cfg.log.sample_every_steps == 0 && done != total_steps)
      write_samples(done);
    if (cfg.checkpoint.every_steps > 0 && done % cfg.checkpoint.every_steps == 0 && done != total_steps)
      write_checkpoint(done);
    // Stop requests agreed by all ranks, so that they all leave after the same step: a signal any rank
    // received, or a time limit any rank's clock reached.
    const double minutes = std::chrono::duration<double>(clock::now() - t_start).count() / 60.0;
    int64_t stop[2] = {g_stop_signal.load(), cfg.train.max_minutes > 0 && minutes >= cfg.train.max_minutes};
    comm.all_reduce(stop, 2, ReduceOp::max);
    if (stop[1] && done != total_steps) {
      con.line("time limit train.max_minutes={} reached after {} steps", cfg.train.max_minutes, done);
      ++step;
      break;
    }
    if (stop[0] != 0) {
      con.line("signal {} received: stopping after step {} with a checkpoint", stop[0], done);
      sum.stopped_by_signal = true;
      ++step;
      break;
    }
  }
  std::signal(SIGINT, old_int);
  std::signal(SIGTERM, old_term);
  std::signal(SIGUSR1, old_usr1);

  const double seconds = std::chrono::duration<double>(clock::now() - t_start).count();
  sum.steps = step;
  sum.images_per_second = step * B / std::max(seconds, 1e-9);
  write_samples(step);
  engine->sync_to_host();  // every rank: the parameter check below reads the host models
  write_checkpoint(step);
  const std::vector<int> drifted = ranks_with_other_parameters(comm, G, D);
  if (!drifted.empty())
    con.line("warning: ranks {} hold parameters that differ from rank 0's: the all-reduce did not give every rank "
             "the same bits (docs/distributed.md)", fmt::format("{}", fmt::join(drifted, ", ")));
  con.line("done: {} steps in {} ({:.0f} img/s, {:.1f} s waiting for data)", step, fmt_duration(seconds),
           sum.images_per_second, loader.wait_seconds());
  con.line("samples:    {}", sum.samples_path);
  con.line("metrics:    {}", sum.metrics_path);
  con.line("checkpoint: {}", sum.checkpoint_path);
  return sum;
}

}  // namespace gt
