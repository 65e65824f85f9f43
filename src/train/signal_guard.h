// SignalGuard: the trainer's stop signals (SIGINT, SIGTERM and train.stop_signal) for the life of a run, the previous handlers restored on every way out.
#pragma once
#include <csignal>

namespace gt {

// While it lives, SIGINT, SIGTERM and `extra` (train.stop_signal, SIGUSR1 by default: mpirun forwards
// SIGUSR1 and SIGUSR2 to every rank, not SIGTERM; 0 = none) only record that a stop was asked for; the
// run polls stop_signal() after each step and stops with a checkpoint. A second stop signal ends the
// process at once, by that signal, with no checkpoint: the way out when a stop takes too long. The
// destructor puts back the handlers it found, also when the run ends by an exception. One guard at a
// time per process.
class SignalGuard {
 public:
  explicit SignalGuard(int extra = SIGUSR1);
  ~SignalGuard();
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;
  // The first stop signal received since the guard was made, or 0.
  int stop_signal() const;

 private:
  int signals_[3] = {SIGINT, SIGTERM, 0};
  struct sigaction old_[3] = {};
};

}  // namespace gt
