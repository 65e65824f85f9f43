// SignalGuard: async-signal-safe recording of stop signals, and the old handlers put back in the destructor.
#include "train/signal_guard.h"

#include <atomic>

#include "core/error.h"

namespace gt {

namespace {

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal.store(sig); }

void install(int sig, struct sigaction* old) {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  GT_CHECK(sigaction(sig, &sa, old) == 0, "cannot install the handler of signal {}", sig);
}

}  // namespace

SignalGuard::SignalGuard() {
  g_stop_signal.store(0);
  install(SIGINT, &old_int_);
  install(SIGTERM, &old_term_);
  install(SIGUSR1, &old_usr1_);
}

SignalGuard::~SignalGuard() {
  sigaction(SIGINT, &old_int_, nullptr);
  sigaction(SIGTERM, &old_term_, nullptr);
  sigaction(SIGUSR1, &old_usr1_, nullptr);
}

int SignalGuard::stop_signal() const { return g_stop_signal.load(); }

}  // namespace gt
