// Launcher detection, MPI initialization and finalization, and every decision dist.backend makes.
#include "parallel/launch.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>
#include <unistd.h>

#include "core/error.h"

#if GANTRAIN_HAVE_MPI
#include <mpi.h>
#endif

namespace gt {

EnvLookup process_env() {
  return [](const char* name) -> const char* { return std::getenv(name); };
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown-host";
  return buf;
}

bool started_by_mpi_launcher(const EnvLookup& env) {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"})
    if (env(var) != nullptr) return true;
  return false;
}

namespace {

// A positive integer from the environment, or 0.
long env_count(const EnvLookup& env, const char* name) {
  const char* v = env(name);
  if (!v || !*v) return 0;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return (end && *end == '\0' && n > 0) ? n : 0;
}

#if GANTRAIN_HAVE_MPI
bool mpi_is_live() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

void finalize_mpi_at_exit() {
  if (mpi_is_live()) MPI_Finalize();
}

// What the fatal-signal handler prints: prepared beforehand, because a handler may only call
// async-signal-safe functions (write, sigaction, raise), and process-wide, because signals are.
char g_fatal_prefix[192];
struct sigaction g_previous_handlers[32];
constexpr int kFatalSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};

extern "C" void on_fatal_signal(int sig, siginfo_t* info, void* context) {
  char line[320];
  const char* name = sig == SIGSEGV ? "SIGSEGV" : sig == SIGBUS ? "SIGBUS" : sig == SIGFPE ? "SIGFPE"
                   : sig == SIGILL ? "SIGILL" : "SIGABRT";
  size_t n = 0;
  for (const char* part : {static_cast<const char*>(g_fatal_prefix), "gantrain: fatal signal ", name,
                           "; mpirun stops the other ranks\n"})
    for (; *part && n < sizeof(line); ++part) line[n++] = *part;
  if (write(STDERR_FILENO, line, n) < 0) {
    // nothing more can be done from inside a signal handler
  }
  // Then whatever handled the signal before (Open MPI's backtrace, or the default: core dump and exit).
  const struct sigaction& prev = g_previous_handlers[sig];
  if ((prev.sa_flags & SA_SIGINFO) && prev.sa_sigaction) {
    sigaction(sig, &prev, nullptr);
    prev.sa_sigaction(sig, info, context);
  } else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN && prev.sa_handler) {
    sigaction(sig, &prev, nullptr);
    prev.sa_handler(sig);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

void install_fatal_signal_report(int rank, int world_size) {
  const std::string prefix = rank_prefix(rank, world_size, host_name());
  std::snprintf(g_fatal_prefix, sizeof(g_fatal_prefix), "%s", prefix.c_str());
  for (int sig : kFatalSignals) {
    struct sigaction act;
    std::memset(&act, 0, sizeof(act));
    act.sa_sigaction = on_fatal_signal;
    act.sa_flags = SA_SIGINFO | SA_RESETHAND;
    sigemptyset(&act.sa_mask);
    sigaction(sig, &act, &g_previous_handlers[sig]);
  }
}

void init_mpi(int* argc, char*** argv) {
  // Open MPI's non-blocking all-reduce picks reduce + broadcast below 4 ranks, half the bandwidth of
  // its ring (bench/allreduce); with so few ranks the ring's extra latency steps cost nothing. A value
  // the user set wins.
  const char* ompi_size = std::getenv("OMPI_COMM_WORLD_SIZE");
  if (ompi_size && std::atoi(ompi_size) > 1 && std::atoi(ompi_size) < 4)
    setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "1", 0);
  int provided = 0;
  // Only the training thread calls MPI; loader threads and OpenMP teams never do.
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    runtime_error("MPI_Init_thread failed");
  // Errors come back as codes that our checks turn into messages naming the call; the job then aborts.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}
#endif

}  // namespace

std::string launch_problem(const EnvLookup& env, int world_size) {
  const long ompi_size = env_count(env, "OMPI_COMM_WORLD_SIZE");
  if (ompi_size > 0 && ompi_size != world_size)
    return fmt::format("mpirun started {} ranks but MPI sees a world of {}", ompi_size, world_size);
  const long srun_tasks = env_count(env, "SLURM_STEP_NUM_TASKS");
  if (!started_by_mpi_launcher(env) && env("SLURM_PROCID") != nullptr && srun_tasks > 1 && world_size == 1)
    return fmt::format(
        "srun started {} tasks, but without MPI wire-up (no PMIX_RANK or PMI_RANK in the environment), so each "
        "would train alone; launch with srun --mpi=pmix (or mpirun)",
        srun_tasks);
  return "";
}

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
#if GANTRAIN_HAVE_MPI
  if (started_by_mpi_launcher(process_env()) && !mpi_is_live()) {
    init_mpi(argc, argv);
    // A crash on one rank: one line saying which rank and host, then mpirun ends the job.
    if (world_size() > 1) install_fatal_signal_report(rank(), world_size());
  }
#else
  (void)argc;
  (void)argv;
#endif
}

MpiRuntime::~MpiRuntime() {
#if GANTRAIN_HAVE_MPI
  finalize_mpi_at_exit();
#endif
}

int MpiRuntime::rank() const {
#if GANTRAIN_HAVE_MPI
  int r = 0;
  if (mpi_is_live()) MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
#else
  return 0;
#endif
}

int MpiRuntime::world_size() const {
#if GANTRAIN_HAVE_MPI
  int n = 1;
  if (mpi_is_live()) MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
#else
  return 1;
#endif
}

void MpiRuntime::abort(int exit_code) {
  std::fflush(nullptr);
#if GANTRAIN_HAVE_MPI
  if (mpi_is_live() && world_size() > 1) MPI_Abort(MPI_COMM_WORLD, exit_code);
#endif
  std::_Exit(exit_code);
}

std::string rank_prefix(int rank, int world_size, const std::string& host) {
  return world_size > 1 ? fmt::format("[rank {}@{}] ", rank, host) : std::string();
}

namespace {

// The host communicator of dist.backend. NCCL moves device buffers and bootstraps over a host
// communicator, so nccl opens what auto opens; the CUDA engine puts NCCL on top of it.
std::unique_ptr<Communicator> open_host(DistBackend backend, double timeout_s) {
#if GANTRAIN_HAVE_MPI
  const bool live = mpi_is_live();
  int world = 1;
  if (live) MPI_Comm_size(MPI_COMM_WORLD, &world);
  switch (backend) {
    case DistBackend::automatic:
    case DistBackend::nccl:
      return live ? make_mpi_communicator(timeout_s) : make_local_communicator();
    case DistBackend::mpi:
      if (!live) {
        int flag = 0;
        MPI_Finalized(&flag);
        GT_CHECK(!flag, "MPI was finalized already; it cannot start again in this process");
        init_mpi(nullptr, nullptr);
        std::atexit(finalize_mpi_at_exit);
      }
      return make_mpi_communicator(timeout_s);
    case DistBackend::local:
      if (world > 1)
        user_error("dist.backend is local, but MPI started this process as one of {} ranks; use dist.backend: auto "
                   "or mpi",
                   world);
      return make_local_communicator();
  }
#else
  (void)timeout_s;
  if (backend == DistBackend::mpi)
    user_error("dist.backend is mpi, but this gantrain was built without MPI (GANTRAIN_MPI=OFF); rebuild with "
               "-DGANTRAIN_MPI=ON or use dist.backend: auto");
  return make_local_communicator();
#endif
  runtime_error("dist.backend {} is not handled", static_cast<int>(backend));
}

// The communicator backend() name open_host gives for dist.backend right now.
std::string host_backend_name(DistBackend backend) {
#if GANTRAIN_HAVE_MPI
  if (backend == DistBackend::mpi || (backend != DistBackend::local && mpi_is_live())) return "mpi";
#else
  (void)backend;
#endif
  return "local";
}

}  // namespace

std::unique_ptr<Communicator> open_communicator(DistBackend backend, double timeout_s) {
  std::unique_ptr<Communicator> comm = open_host(backend, timeout_s);
  const std::string problem = launch_problem(process_env(), comm->world_size());
  if (!problem.empty()) user_error("{}", problem);
  return comm;
}

std::unique_ptr<Communicator> replacement_communicator(const Communicator& current, DistBackend backend,
                                                       double timeout_s) {
  if (current.backend() == host_backend_name(backend)) return nullptr;
  return open_communicator(backend, timeout_s);
}

void check_backend_for_device(DistBackend backend, bool cuda, DeviceChoice asked) {
  if (backend == DistBackend::nccl && !cuda)
    user_error("dist.backend is nccl, which moves GPU buffers, but run.device is {}{}; use run.device: cuda, or "
               "dist.backend: auto or mpi",
               choice_name(asked), asked == DeviceChoice::automatic ? " and some rank has no GPU" : "");
}

DeviceCollectives choose_device_collectives(DistBackend backend, int max_ranks_per_gpu,
                                            const std::string& nccl_missing) {
  if (backend == DistBackend::nccl) {
    if (!nccl_missing.empty()) user_error("dist.backend is nccl, but {}; use dist.backend: mpi or auto", nccl_missing);
    return DeviceCollectives::nccl;  // ranks sharing a GPU: NCCL refuses them with its own message
  }
  if (backend == DistBackend::automatic && max_ranks_per_gpu <= 1 && nccl_missing.empty())
    return DeviceCollectives::nccl;
  return DeviceCollectives::staged;
}

}  // namespace gt
