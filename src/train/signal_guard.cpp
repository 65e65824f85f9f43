// SignalGuard: async-signal-safe recording of stop signals, the second one fatal, and the old handlers put back in the destructor.
#include "train/signal_guard.h"

#include <atomic>
#include <unistd.h>

#include "core/error.h"

namespace gt {

namespace {

std::atomic<int> g_stop_signal{0};

extern "C" void on_stop_signal(int sig) {
  int none = 0;
  if (g_stop_signal.compare_exchange_strong(none, sig)) return;
  // A second stop signal: only async-signal-safe calls from here on.
  static const char msg[] = "gantrain: second stop signal: stopping at once, without a checkpoint\n";
  ssize_t ignored = write(STDERR_FILENO, msg, sizeof(msg) - 1);
  (void)ignored;
  signal(sig, SIG_DFL);
  raise(sig);
}

void install(int sig, struct sigaction* old) {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  GT_CHECK(sigaction(sig, &sa, old) == 0, "cannot install the handler of signal {}", sig);
}

}  // namespace

SignalGuard::SignalGuard(int extra) {
  g_stop_signal.store(0);
  if (extra != SIGINT && extra != SIGTERM) signals_[2] = extra;
  for (int i = 0; i < 3; ++i)
    if (signals_[i] > 0) install(signals_[i], &old_[i]);
}

SignalGuard::~SignalGuard() {
  for (int i = 0; i < 3; ++i)
    if (signals_[i] > 0) sigaction(signals_[i], &old_[i], nullptr);
}

int SignalGuard::stop_signal() const { return g_stop_signal.load(); }

}  // namespace gt
