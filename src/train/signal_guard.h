// SignalGuard: the trainer's stop signals (SIGINT, SIGTERM, SIGUSR1) for the life of a run, the previous handlers restored on every way out.
#pragma once
#include <csignal>

namespace gt {

// While it lives, SIGINT, SIGTERM and SIGUSR1 (mpirun forwards SIGUSR1 to every rank, not SIGTERM) only
// record that a stop was asked for; the run polls stop_signal() after each step and stops with a
// checkpoint. The destructor puts back the handlers it found, also when the run ends by an exception.
// One guard at a time per process.
class SignalGuard {
 public:
  SignalGuard();
  ~SignalGuard();
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;
  // The last stop signal received since the guard was made, or 0.
  int stop_signal() const;

 private:
  struct sigaction old_int_, old_term_, old_usr1_;
};

}  // namespace gt
